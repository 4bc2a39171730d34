import { useState } from 'preact/hooks';
import type { Api, Reply } from './api.ts';
import { Confirm } from './dialog.tsx';
import { bytes, localInput, relative, when } from './format.ts';
import { LivePanel } from './live.tsx';
import { PlanDialog } from './plan.tsx';
import type { ComponentCheck, Hold, Live, Status } from './types.ts';

/*
 * "Now": per component what runs and what is available (with what it would do before it does it), what
 * is held back and why, what is scheduled, what is happening live, and the health of the trust and the
 * bus. Every action that stops a service asks first, showing the dry run.
 */

export interface ActionProps {
  api: Api;
  /** Shows an action's outcome (and refreshes what the page shows). */
  done: (reply: Reply) => void;
}

export function Now(props: ActionProps & { status: Status; live: Live }) {
  const { status } = props;
  const components = status.components.length
    ? status.components
    : Object.entries(status.installed).map(([component, installed]) => ({ component, installed }));
  return (
    <div class="stack">
      <LivePanel live={props.live} />
      <section aria-labelledby="components-title">
        <h2 id="components-title">Components</h2>
        <div class="cards">
          {components.map((c) => (
            <ComponentCard key={c.component} {...props} check={c} />
          ))}
        </div>
      </section>
      <Schedule {...props} />
      <Health {...props} />
    </div>
  );
}

function ComponentCard(props: ActionProps & { status: Status; check: ComponentCheck }) {
  const { api, done, status, check } = props;
  const update = check.update;
  const downloaded = update ? status.downloaded.includes(`${check.component}@${update.version}`) : false;
  const holds = [
    ...(check.held ?? []),
    ...status.holds.filter(
      (h) => h.component === check.component && !check.held?.some((c) => c.version === h.version),
    ),
  ];
  const paused = status.paused.find((p) => p.component === check.component);
  const backups = status.backups.filter((b) => b.component === check.component);
  const [planning, setPlanning] = useState<string>();
  const [rollback, setRollback] = useState<string>();
  const name = check.component;
  return (
    <article class="card" aria-labelledby={`card-${name}`}>
      <h3 id={`card-${name}`}>{name}</h3>
      <p>
        Installed:{' '}
        <strong data-testid={`installed-${name}`}>{status.installed[name] ?? check.installed}</strong>
      </p>
      {update ? (
        <div class="available">
          <p>
            Available: <strong data-testid={`available-${name}`}>{update.version}</strong>{' '}
            <span class="badge">{update.channel}</span>
            {update.critical && <span class="badge critical">critical</span>} · {bytes(update.size_bytes)} ·{' '}
            {downloaded ? 'downloaded and verified' : 'not downloaded yet'}
          </p>
          {update.notes && <p class="notes">{update.notes}</p>}
          <div class="actions">
            {downloaded ? (
              <button type="button" onClick={() => setPlanning(update.version)}>
                Preview and install {update.version}
              </button>
            ) : (
              <button
                type="button"
                onClick={async () =>
                  done(await api.command('/download', { component: name, version: update.version }))
                }
              >
                Download {update.version}
              </button>
            )}
            <button
              type="button"
              class="secondary"
              onClick={async () =>
                done(await api.command('/skip', { component: name, version: update.version, skip: true }))
              }
            >
              Skip {update.version}
            </button>
          </div>
          {downloaded && (
            <ScheduleForm
              {...props}
              component={name}
              version={update.version}
              label="Install at"
              button="Schedule"
              initial={new Date(Date.now() + 3600_000)}
            />
          )}
        </div>
      ) : (
        <p class="muted">No newer release is offered.</p>
      )}
      {check.blocked && (
        <p class="muted">
          {check.blocked.version} needs {check.blocked.min_from_version} first.
        </p>
      )}
      {holds.length > 0 && (
        <ul class="holds" aria-label={`releases of ${name} held back`}>
          {holds.map((hold) => (
            <HoldItem key={hold.version} {...props} hold={hold} onRetry={() => setPlanning(hold.version)} />
          ))}
        </ul>
      )}
      {paused && (
        <div class="banner warning" role="status">
          Automatic installs paused since {when(paused.since)} after {paused.failures} failures:{' '}
          {paused.reason}
          <button type="button" onClick={async () => done(await api.command('/resume', { component: name }))}>
            Resume automatic installs
          </button>
        </div>
      )}
      {backups.length > 0 && (
        <form
          class="inline"
          onSubmit={(event) => {
            event.preventDefault();
            setRollback((event.currentTarget.elements.namedItem('backup') as HTMLSelectElement).value);
          }}
        >
          <label for={`backup-${name}`}>Roll back, restoring</label>
          <select id={`backup-${name}`} name="backup">
            {backups.map((b) => (
              <option key={b.id} value={b.id}>
                {b.from_version} data of {when(b.created_at)} ({bytes(b.bytes)})
              </option>
            ))}
          </select>
          <button type="submit" class="secondary">
            Roll back…
          </button>
        </form>
      )}
      {planning && (
        <PlanDialog {...props} component={name} version={planning} onClose={() => setPlanning(undefined)} />
      )}
      {rollback && (
        <Confirm
          title={`Roll back ${name}?`}
          confirm="Roll back now"
          onCancel={() => setRollback(undefined)}
          onConfirm={async () => {
            setRollback(undefined);
            done(await api.command('/rollback', { component: name, backup_id: rollback }));
          }}
        >
          <p>
            {name} goes back to the version it ran before the last install; its service stops while the data
            of backup <code>{rollback}</code> is restored.
          </p>
        </Confirm>
      )}
    </article>
  );
}

function HoldItem(props: ActionProps & { hold: Hold; onRetry: () => void }) {
  const { hold, api, done } = props;
  return (
    <li class={`hold ${hold.kind}`} data-testid={`hold-${hold.component}-${hold.version}`}>
      <strong>
        {hold.version}{' '}
        {hold.kind === 'quarantined' ? 'quarantined' : hold.kind === 'skipped' ? 'skipped' : 'held back'}
      </strong>
      : {hold.reason}
      <div class="actions">
        {hold.kind === 'quarantined' && (
          <button type="button" class="secondary" onClick={props.onRetry}>
            Retry {hold.version}
          </button>
        )}
        {hold.kind === 'skipped' && (
          <button
            type="button"
            class="secondary"
            onClick={async () =>
              done(
                await api.command('/skip', { component: hold.component, version: hold.version, skip: false }),
              )
            }
          >
            Offer it again
          </button>
        )}
        {hold.kind === 'strands_devices' && (
          <button
            type="button"
            class="secondary"
            onClick={async () =>
              done(await api.command('/download', { component: hold.component, version: hold.version }))
            }
          >
            Download anyway
          </button>
        )}
      </div>
    </li>
  );
}

function Schedule(props: ActionProps & { status: Status }) {
  const { status, api, done } = props;
  const window = status.settings?.effective.preferred_time;
  return (
    <section aria-labelledby="schedule-title">
      <h2 id="schedule-title">Schedule</h2>
      {window && <p class="muted">Automatic installs start at {window} (server time zone).</p>}
      {status.schedule.length === 0 ? (
        <p class="muted">No install is waiting.</p>
      ) : (
        <ul class="schedule">
          {status.schedule.map((s) => (
            <li key={s.job_id} data-testid={`scheduled-${s.component}-${s.version}`}>
              {s.component} {s.version} at <time dateTime={s.scheduled_for}>{when(s.scheduled_for)}</time> (
              {relative(s.scheduled_for)}, {s.reason.replace('_', ' ')})
              <ScheduleForm
                {...props}
                component={s.component}
                version={s.version}
                label="Move to"
                button="Move"
                initial={new Date(s.scheduled_for)}
              />
              <button
                type="button"
                class="secondary"
                onClick={async () =>
                  done(await api.command('/install/cancel', { component: s.component, version: s.version }))
                }
              >
                Cancel the install of {s.version}
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function Health(props: ActionProps & { status: Status }) {
  const { status, api, done } = props;
  const check = status.last_check;
  return (
    <section aria-labelledby="health-title">
      <h2 id="health-title">Checks, trust and bus</h2>
      <p>
        Last check: {check ? `${when(check.checked_at)} — ${check.outcome.replace('_', ' ')}` : 'none yet'}
        {check?.error && <span class="error"> ({check.error.message})</span>}{' '}
        <button type="button" class="secondary" onClick={async () => done(await checkNow(api))}>
          Check now
        </button>
      </p>
      {check?.metadata_expiry && (
        <p>
          Signed metadata valid until:{' '}
          {Object.entries(check.metadata_expiry)
            .map(([role, at]) => `${role} ${relative(at)}`)
            .join(' · ')}
        </p>
      )}
      <p>
        AICO bus ({status.bus.mode}):{' '}
        <span class={status.bus.connected ? 'ok' : 'error'}>
          {status.bus.connected
            ? 'connected'
            : `not connected${status.bus.problem ? ` — ${status.bus.problem}` : ''}`}
        </span>
      </p>
    </section>
  );
}

async function checkNow(api: Api): Promise<Reply> {
  const reply = await api.command('/check?forced=true', {});
  return {
    accepted: reply.outcome !== 'failed',
    message:
      reply.outcome === 'failed'
        ? `the check failed: ${(reply.error as { message?: string } | undefined)?.message ?? ''}`
        : `checked: ${String(reply.outcome).replace('_', ' ')}`,
  };
}

/** Installs a release at a time picked (the same request again, with another time, moves it). */
function ScheduleForm(
  props: ActionProps & { component: string; version: string; label: string; button: string; initial: Date },
) {
  const { api, done, component, version } = props;
  const [at, setAt] = useState(localInput(props.initial));
  const id = `${props.button.toLowerCase()}-${component}-${version}`;
  return (
    <form
      class="inline"
      onSubmit={async (event) => {
        event.preventDefault();
        done(await api.command('/install', { component, version, at: new Date(at).toISOString() }));
      }}
    >
      <label for={id}>{props.label}</label>
      <input
        id={id}
        type="datetime-local"
        value={at}
        onInput={(e) => setAt(e.currentTarget.value)}
        required
      />
      <button type="submit" class="secondary">
        {props.button}
      </button>
    </form>
  );
}
