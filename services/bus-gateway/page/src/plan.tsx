import { useEffect, useState } from 'preact/hooks';
import { Confirm } from './dialog.tsx';
import { bytes, duration } from './format.ts';
import type { ActionProps } from './now.tsx';
import type { PlanPreview } from './types.ts';

/** The dry run first; the install only once the operator has seen what it stops. */
export function PlanDialog(props: ActionProps & { component: string; version: string; onClose: () => void }) {
  const { api, done, component, version } = props;
  const [plan, setPlan] = useState<PlanPreview | string>();
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    setPlan('loading');
    void api.command('/install/plan', { component, version }).then((reply) => {
      setPlan(reply.accepted ? (reply.plan as PlanPreview) : (reply.message ?? 'no plan'));
    });
  }, [api, component, version]);
  const preview = typeof plan === 'object' ? plan : undefined;
  return (
    <Confirm
      title={`Install ${component} ${version}?`}
      confirm={
        preview?.services.length
          ? `Install now (stops ${preview.services.map((s) => s.service).join(', ')})`
          : 'Install now'
      }
      busy={busy || !preview}
      onCancel={props.onClose}
      onConfirm={async () => {
        setBusy(true);
        props.onClose();
        done(await api.command('/install', { component, version }));
      }}
    >
      {plan === 'loading' && <p aria-live="polite">Planning (nothing changes)…</p>}
      {typeof plan === 'string' && plan !== 'loading' && <p class="error">{plan}</p>}
      {preview && (
        <div data-testid="plan">
          <p>
            {preview.installed ?? '?'} → {preview.version}. Expected downtime about{' '}
            <strong>{duration(preview.expected_downtime_seconds)}</strong> (
            {preview.downtime_basis.replace('_', ' ')}).
          </p>
          <ul>
            {preview.services.map((s) => (
              <li key={s.service}>
                <strong>{s.service}</strong>: {s.why}
              </li>
            ))}
          </ul>
          {preview.backup ? (
            <p>
              Backs up{' '}
              {preview.backup.services.map((b) => b.paths.join(', ')).join('; ') || 'the declared hooks'}{' '}
              (about {bytes(preview.backup.estimated_bytes)})
              {preview.disk && !preview.disk.enough ? ' — not enough free disk!' : ''}.
            </p>
          ) : (
            <p>No data backup is declared.</p>
          )}
          <details>
            <summary>Steps ({preview.steps.length})</summary>
            <ol>
              {preview.steps.map((s) => (
                <li key={s}>{s.replace(':*', '')}</li>
              ))}
            </ol>
          </details>
        </div>
      )}
    </Confirm>
  );
}
