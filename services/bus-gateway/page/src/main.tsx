import { render } from 'preact';
import { useCallback, useEffect, useMemo, useState } from 'preact/hooks';
import { Api, ApiError, type Reply, storedToken, storeToken } from './api.ts';
import { Devices } from './devices.tsx';
import { History } from './history.tsx';
import { Now } from './now.tsx';
import { Settings } from './settings.tsx';
import type { Live, Status } from './types.ts';
import './style.css';

/*
 * The operator's page, served by the gateway at `/`: what runs, what is available and held, what is
 * happening (the event stream), what happened and why, the devices, and every action the bus offers.
 * Everything comes from this origin's control API; the token lives in the tab's session only.
 */

const VIEWS = ['Now', 'History', 'Devices', 'Settings'] as const;
type View = (typeof VIEWS)[number];

function App() {
  const [token, setToken] = useState(storedToken());
  const api = useMemo(() => (token ? new Api(token) : undefined), [token]);
  const logout = useCallback(() => {
    storeToken(undefined);
    setToken(undefined);
  }, []);
  if (!api) {
    return (
      <Login
        onLogin={(t) => {
          storeToken(t);
          setToken(t);
        }}
      />
    );
  }
  return <Dashboard api={api} onLogout={logout} />;
}

function Login(props: { onLogin: (token: string) => void }) {
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  return (
    <main class="login">
      <h1>AICO updates</h1>
      <form
        onSubmit={async (event) => {
          event.preventDefault();
          const token = (event.currentTarget.elements.namedItem('token') as HTMLInputElement).value.trim();
          setBusy(true);
          try {
            await new Api(token).get('/status');
            props.onLogin(token);
          } catch (e) {
            setError(
              e instanceof ApiError && e.status === 401
                ? 'That token was refused. It is in the gateway’s volume: docker compose exec bus-gateway cat /var/lib/aico-update/gateway/control-token'
                : `The control API cannot be reached: ${(e as Error).message}`,
            );
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for="token">Control token</label>
        <input id="token" name="token" type="password" autoComplete="current-password" required />
        <button type="submit" disabled={busy}>
          Log in
        </button>
        {error && (
          <p class="error" role="alert" data-testid="login-error">
            {error}
          </p>
        )}
      </form>
      <p class="muted">The token is kept in this tab only, never in the address.</p>
    </main>
  );
}

function Dashboard(props: { api: Api; onLogout: () => void }) {
  const { api } = props;
  const [view, setView] = useState<View>('Now');
  const [status, setStatus] = useState<Status>();
  const [live, setLive] = useState<Live>({});
  const [message, setMessage] = useState<{ ok: boolean; text: string }>();
  const [version, setVersion] = useState(0);
  const refresh = useCallback(async () => {
    try {
      setStatus(await api.get<Status>('/status'));
      setVersion((v) => v + 1);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) props.onLogout();
    }
  }, [api, props.onLogout]);
  useEffect(() => {
    void refresh();
    const timer = setInterval(refresh, 10_000);
    return () => clearInterval(timer);
  }, [refresh]);
  useEffect(() => {
    const controller = new AbortController();
    const follow = async () => {
      while (!controller.signal.aborted) {
        await api
          .events((topic, data) => setLive((l) => onEvent(l, topic, data, refresh)), controller.signal)
          .catch(() => undefined);
        await new Promise((r) => setTimeout(r, 2000));
      }
    };
    void follow();
    return () => controller.abort();
  }, [api, refresh]);
  const done = useCallback(
    (reply: Reply) => {
      setMessage({
        ok: reply.accepted !== false,
        text: reply.message ?? (reply.accepted === false ? 'refused' : 'done'),
      });
      void refresh();
    },
    [refresh],
  );
  return (
    <>
      <header>
        <h1>AICO updates</h1>
        <nav aria-label="views">
          {VIEWS.map((v) => (
            <button
              key={v}
              type="button"
              aria-current={v === view ? 'page' : undefined}
              onClick={() => setView(v)}
            >
              {v}
            </button>
          ))}
        </nav>
        <button type="button" class="secondary" onClick={props.onLogout}>
          Log out
        </button>
      </header>
      <main>
        <div aria-live="polite" role="status" class="message-slot">
          {message && (
            <p class={message.ok ? 'message ok' : 'message error'} data-testid="message">
              {message.text}
            </p>
          )}
        </div>
        {!status && <p aria-live="polite">Loading…</p>}
        {status && view === 'Now' && <Now api={api} done={done} status={status} live={live} />}
        {status && view === 'History' && <History api={api} backups={status.backups} version={version} />}
        {status && view === 'Devices' && <Devices api={api} answers={status.frontends} version={version} />}
        {status && view === 'Settings' && (
          <Settings api={api} done={done} settings={status.settings?.effective} />
        )}
      </main>
    </>
  );
}

/** What an event changes in the live view; installs and checks refresh the status too. */
function onEvent(live: Live, topic: string, data: unknown, refresh: () => Promise<void>): Live {
  const event = data as Record<string, unknown>;
  switch (topic) {
    case 'update.download.progress':
      if (event.status !== 'in_progress') void refresh();
      return { ...live, download: event as unknown as Live['download'] };
    case 'update.install.progress': {
      const step = event as unknown as NonNullable<Live['install']>['steps'][number] & {
        component: string;
        version: string;
        kind?: string;
      };
      const same = live.install && live.install.version === step.version && live.install.kind === step.kind;
      const steps = (same ? (live.install?.steps ?? []) : []).filter((s) => s.index !== step.index);
      const install = {
        component: step.component,
        version: step.version,
        ...(step.kind ? { kind: step.kind } : {}),
        steps: [...steps, step].sort((a, b) => a.index - b.index),
      };
      return { ...live, install, ...(same ? {} : { outcome: undefined }) };
    }
    case 'update.install.complete': {
      void refresh();
      const release = event.release as { component: string; version: string };
      // A step still running when the install ended is the one that failed (the rollback follows it).
      const install =
        live.install && live.install.version === release.version && !event.success
          ? {
              ...live.install,
              steps: live.install.steps.map((s) => (s.status === 'started' ? { ...s, status: 'failed' } : s)),
            }
          : live.install;
      return {
        ...live,
        ...(install ? { install } : {}),
        outcome: {
          ...release,
          outcome: String(event.outcome),
          success: Boolean(event.success),
          ...(event.reason ? { reason: String(event.reason) } : {}),
        },
      };
    }
    case 'update.check.response':
    case 'update.restart.scheduled':
    case 'update.download.complete':
      void refresh();
      return live;
    default:
      return live;
  }
}

const root = document.getElementById('app') as HTMLElement;
root.textContent = ''; // the "Loading" line of index.html
render(<App />, root);
