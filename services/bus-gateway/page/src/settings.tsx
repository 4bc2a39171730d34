import { useState } from 'preact/hooks';
import type { ActionProps } from './now.tsx';
import type { Settings as Values } from './types.ts';

/* "Settings": what a frontend can set over the bus, validated by the installer (a refusal names the field). */
export function Settings(props: ActionProps & { settings: Values | undefined }) {
  const [values, setValues] = useState<Values | undefined>(props.settings);
  if (!values) return <p class="muted">The settings are not known yet (is the installer running?).</p>;
  const set = <K extends keyof Values>(key: K, value: Values[K]) => setValues({ ...values, [key]: value });
  const flag = (key: keyof Values, label: string) => (
    <div class="field">
      <input
        id={`setting-${key}`}
        type="checkbox"
        checked={values[key] as boolean}
        onChange={(e) => set(key, e.currentTarget.checked as never)}
      />
      <label for={`setting-${key}`}>{label}</label>
    </div>
  );
  return (
    <section aria-labelledby="settings-title">
      <h2 id="settings-title">Settings</h2>
      <form
        class="settings"
        onSubmit={async (event) => {
          event.preventDefault();
          props.done(await props.api.command('/settings', { set: values }, 'PUT'));
        }}
      >
        {flag('auto_check', 'Check for updates by itself')}
        <div class="field">
          <label for="setting-check_interval">Check every (hours)</label>
          <input
            id="setting-check_interval"
            type="number"
            min="1"
            step="1"
            value={values.check_interval}
            onInput={(e) => set('check_interval', Number(e.currentTarget.value))}
          />
        </div>
        {flag('auto_download', 'Download new releases by itself')}
        {flag('auto_install', 'Install new releases by itself (in the window)')}
        {flag('critical_install', 'Install critical releases at once')}
        {flag('allow_restart', 'Automatic installs may restart services')}
        {flag('notify_available', 'Announce new releases')}
        <div class="field">
          <label for="setting-preferred_time">Install window starts at</label>
          <input
            id="setting-preferred_time"
            type="text"
            inputMode="numeric"
            placeholder="HH:MM"
            value={values.preferred_time}
            onInput={(e) => set('preferred_time', e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label for="setting-channel">Channel</label>
          <select
            id="setting-channel"
            value={values.channel}
            onChange={(e) => set('channel', e.currentTarget.value)}
          >
            <option value="stable">stable</option>
            <option value="beta">beta</option>
            <option value="dev">dev</option>
          </select>
        </div>
        <button type="submit">Save settings</button>
      </form>
    </section>
  );
}
