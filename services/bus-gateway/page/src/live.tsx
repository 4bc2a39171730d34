import { bytes, duration } from './format.ts';
import type { Live } from './types.ts';

/* "Live": the download and the install happening now, from the event stream, with the outcome. */
export function LivePanel({ live }: { live: Live }) {
  const d = live.download;
  const i = live.install;
  const o = live.outcome;
  if (!d && !i && !o) return null;
  return (
    <section aria-labelledby="live-title" class="live" aria-live="polite">
      <h2 id="live-title">Live</h2>
      {d && (
        <div>
          <p>
            Download of {d.component} {d.version}: {d.status.replace('_', ' ')} — {bytes(d.bytes_done)} of{' '}
            {bytes(d.total_bytes)}
            {d.status === 'in_progress' &&
              ` at ${bytes(d.rate_bytes_per_second)}/s, ${duration(d.eta_seconds)} left`}
            {d.message ? ` (${d.message})` : ''}
          </p>
          <progress max={100} value={d.percent} aria-label={`download of ${d.component} ${d.version}`}>
            {d.percent.toFixed(0)} %
          </progress>
        </div>
      )}
      {i && (
        <div>
          <p>
            {i.kind === 'rollback' ? 'Rollback' : 'Install'} of {i.component} {i.version}:
          </p>
          <ol class="steps" data-testid="live-steps">
            {i.steps.map((s) => (
              <li key={`${s.index}`} class={s.status}>
                {s.step}
                {s.service === '*' ? '' : ` ${s.service}`} —{' '}
                {s.status === 'done' ? 'done' : s.status === 'failed' ? 'failed' : 'running'}
              </li>
            ))}
          </ol>
        </div>
      )}
      {o && (
        <p class={o.success ? 'ok' : 'error'} data-testid="live-outcome" role="status">
          {o.component} {o.version}: {o.outcome.replace('_', ' ')}
          {o.reason ? ` — ${o.reason}` : ''}
        </p>
      )}
    </section>
  );
}
