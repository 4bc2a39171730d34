import { useEffect, useState } from 'preact/hooks';
import type { Api } from './api.ts';
import { duration, when } from './format.ts';
import type { BackupSummary, Decision } from './types.ts';

/*
 * "History": every decision with its reason, filterable; an install's steps and timings; the backups;
 * and a picture of installs and rollbacks over time, where a person would rather look than read.
 */

const KINDS = [
  'installed',
  'rolled_back',
  'failed',
  'refused',
  'quarantined',
  'scheduled',
  'rescheduled',
  'cancelled',
  'held_for_window',
  'waiting_for_user',
  'downloaded',
  'download_failed',
  'checked',
  'check_failed',
  'circuit_open',
  'skipped',
  'settings_changed',
  'waits_for_backend',
  'strands_devices',
];

export function History(props: { api: Api; backups: BackupSummary[]; version: number }) {
  const [component, setComponent] = useState('');
  const [kind, setKind] = useState('');
  const [decisions, setDecisions] = useState<Decision[]>();
  const [error, setError] = useState<string>();
  useEffect(() => {
    const query = new URLSearchParams({ limit: '300' });
    if (component) query.set('component', component);
    if (kind) query.set('kind', kind);
    props.api.get<{ history: Decision[] }>(`/history?${query}`).then(
      (r) => setDecisions(r.history),
      (e: Error) => setError(e.message),
    );
  }, [props.api, component, kind, props.version]);
  return (
    <div class="stack">
      <section aria-labelledby="timeline-title">
        <h2 id="timeline-title">Installs and rollbacks over time</h2>
        <Timeline decisions={decisions ?? []} />
      </section>
      <section aria-labelledby="history-title">
        <h2 id="history-title">Decisions</h2>
        <form class="inline filters" onSubmit={(e) => e.preventDefault()}>
          <label for="filter-component">Component</label>
          <select
            id="filter-component"
            value={component}
            onChange={(e) => setComponent(e.currentTarget.value)}
          >
            <option value="">all</option>
            <option value="backend">backend</option>
            <option value="frontend">frontend</option>
            <option value="updater">updater</option>
          </select>
          <label for="filter-kind">Kind</label>
          <select id="filter-kind" value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            <option value="">all</option>
            {KINDS.map((k) => (
              <option key={k} value={k}>
                {k.replaceAll('_', ' ')}
              </option>
            ))}
          </select>
        </form>
        {error && <p class="error">{error}</p>}
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Who</th>
                <th scope="col">What</th>
                <th scope="col">Release</th>
                <th scope="col">Why</th>
              </tr>
            </thead>
            <tbody>
              {(decisions ?? []).map((d, index) => (
                <tr key={`${d.at}-${index}`} class={d.kind}>
                  <td>
                    <time dateTime={d.at}>{when(d.at)}</time>
                  </td>
                  <td>{d.service}</td>
                  <td>{d.kind.replaceAll('_', ' ')}</td>
                  <td>{[d.component, d.version].filter(Boolean).join(' ')}</td>
                  <td>
                    {d.code && <code>{d.code}</code>} {d.reason}
                    {d.steps && d.steps.length > 0 && (
                      <details>
                        <summary>
                          {d.steps.length} steps, {duration((d.duration_ms ?? 0) / 1000)}
                        </summary>
                        <ol>
                          {d.steps.map((s, i) => (
                            <li key={`${s.step}-${i}`}>
                              {s.step}
                              {s.service === '*' ? '' : ` ${s.service}`}: {duration(s.ms / 1000)}
                            </li>
                          ))}
                        </ol>
                      </details>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
      <section aria-labelledby="backups-title">
        <h2 id="backups-title">Backups</h2>
        {props.backups.length === 0 ? (
          <p class="muted">No data backup yet.</p>
        ) : (
          <ul>
            {props.backups.map((b) => (
              <li key={b.id}>
                <code>{b.id}</code>: {b.component} {b.from_version} data, taken {when(b.created_at)} before{' '}
                {b.to_version}
              </li>
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}

const MARKS: Record<string, { color: string; label: string }> = {
  installed: { color: '#1a7f37', label: 'installed' },
  rolled_back: { color: '#cf222e', label: 'rolled back' },
  failed: { color: '#8250df', label: 'failed' },
};

/** Installs (green) and rollbacks (red) on a time axis of the span the history covers. */
function Timeline({ decisions }: { decisions: Decision[] }) {
  const marks = decisions.filter((d) => d.kind in MARKS);
  if (marks.length === 0) return <p class="muted">No install yet.</p>;
  const times = marks.map((d) => Date.parse(d.at));
  const start = Math.min(...times);
  const span = Math.max(Math.max(...times) - start, 60_000);
  const width = 600;
  const x = (t: number) => 20 + ((t - start) / span) * (width - 40);
  const count = (kind: string) => marks.filter((d) => d.kind === kind).length;
  const summary = `${count('installed')} installed, ${count('rolled_back')} rolled back, ${count('failed')} failed, from ${when(new Date(start).toISOString())}`;
  return (
    <figure>
      <svg viewBox={`0 0 ${width} 60`} role="img" aria-labelledby="timeline-caption" class="timeline">
        <title>{summary}</title>
        <line x1="20" y1="30" x2={width - 20} y2="30" class="axis" />
        {marks.map((d, i) => (
          <circle key={`${d.at}-${i}`} cx={x(Date.parse(d.at))} cy="30" r="7" fill={MARKS[d.kind]?.color}>
            <title>
              {when(d.at)}: {d.component} {d.version} {MARKS[d.kind]?.label}
            </title>
          </circle>
        ))}
      </svg>
      <figcaption id="timeline-caption">{summary}</figcaption>
    </figure>
  );
}
