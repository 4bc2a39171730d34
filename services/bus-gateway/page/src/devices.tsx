import { useEffect, useState } from 'preact/hooks';
import type { Api } from './api.ts';
import { when } from './format.ts';
import type { Device, DeviceAnswer } from './types.ts';

/* "Devices": the frontends that asked, their platforms and versions, and what each is offered or waits for. */
export function Devices(props: { api: Api; answers: DeviceAnswer[]; version: number }) {
  const [devices, setDevices] = useState<Device[]>();
  useEffect(() => {
    props.api.get<{ devices: Device[] }>('/devices').then(
      (r) => setDevices(r.devices),
      () => setDevices([]),
    );
  }, [props.api, props.version]);
  if (!devices) return <p aria-live="polite">Loading devices…</p>;
  if (devices.length === 0) return <p class="muted">No frontend device has asked for updates yet.</p>;
  return (
    <section aria-labelledby="devices-title">
      <h2 id="devices-title">Frontend devices</h2>
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Device</th>
              <th scope="col">Platform</th>
              <th scope="col">Runs</th>
              <th scope="col">Last seen</th>
              <th scope="col">Offered or waits for</th>
            </tr>
          </thead>
          <tbody>
            {devices.map((d) => {
              const answer = props.answers.find((a) => a.device_id === d.id);
              return (
                <tr key={d.id}>
                  <td>{d.id}</td>
                  <td>{d.platform}</td>
                  <td>{d.version}</td>
                  <td>{when(d.last_seen)}</td>
                  <td>{answer ? answer.reason : '—'}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </section>
  );
}
