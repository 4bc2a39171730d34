import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { UPDATER_SERVICES } from '@aico-update/shared';
import { docker, freePort, makeTempDir, waitUntil } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curveKeyPair } from 'zeromq';
import { Stack } from '../../scripts/stack.ts';
import { ZmqPeer } from '../../services/bus-gateway/test/support/peer.ts';

/*
 * The update system updating itself, as deployed (docker-compose.yml, compose v2, the real engine):
 * updater releases built from the deployed images with a new version stamped in, published and found
 * like any release, installed on request through the control API. A broken installer is put back; the
 * helper, the old installer and the new installer are SIGKILLed (from the host: a crash, so the
 * engine's restart policies apply) at the steps where each matters; and a backend that needs a newer
 * updater gets it first: a good updater release installs through the helper, compose keeps it, state
 * came through, and the backend then installs through the new services.
 * Health checks run every second here (fast-health.yml), so that a gate takes seconds.
 */

describe('the update system updates itself (compose v2)', () => {
  const id = randomBytes(3).toString('hex');
  const frontendKeys = curveKeyPair();
  let stack: Stack;
  let frontend: ZmqPeer;
  let token: string;
  let original: Record<string, string>;
  /** Each published updater release's image per service. */
  const released: Record<string, Record<string, string>> = {};

  beforeAll(async () => {
    stack = await Stack.up({
      project: `aicoself${id}`,
      compose: 'v2',
      repoDir: join(await makeTempDir('self-update'), 'repo'),
      ports: {
        control: await freePort(),
        busPub: await freePort(),
        busSub: await freePort(),
        backend: await freePort(),
        prometheus: await freePort(),
      },
      backend: { container: `aico-backend-self${id}`, image: `aico-example/backend:current-self${id}` },
      frontendPublicKey: frontendKeys.publicKey,
      extraFiles: [join(import.meta.dirname, 'fast-health.yml')],
      // Its own image tags: the self-update moves them, and other stacks on this engine use `local`.
      imageTag: `self${id}`,
      // A new service may take a while to answer its first check on a loaded two-core machine (CI saw
      // the downloader still starting after 20 s); the broken releases here fail by crashing, seen at once.
      healthTimeoutSeconds: 90,
    });
    await stack.healthy();
    token = await stack.controlToken();
    original = await stack.serviceImages();
    frontend = new ZmqPeer(
      '127.0.0.1',
      stack.options.ports.busPub,
      stack.options.ports.busSub,
      await stack.brokerPublicKey(),
      frontendKeys,
    );
    await frontend.settle(1000);
  }, 900_000);

  afterAll(async () => {
    frontend?.close();
    await stack?.down();
    await docker('rmi', '-f', ...(await leftoverImages())).catch(() => undefined);
  });

  const leftoverImages = async () =>
    (await docker('images', '--format', '{{.Repository}}:{{.Tag}}', 'aico-update/*'))
      .split('\n')
      .filter((tag) => tag.endsWith(`-${stack.options.project}`) || tag.endsWith(`:self${id}`));

  /** The control API with the token read once at the start (it must still work after every swap). */
  // biome-ignore lint/suspicious/noExplicitAny: JSON answers, asserted field by field
  const api = async (path: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const response = await fetch(`${stack.controlUrl}/api/v1${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: await response.json() };
  };

  /** The gateway is swapped too: a request may find it restarting. */
  const apiWhenUp = (path: string) =>
    waitUntil(
      async () => {
        const r = await api(path).catch(() => undefined);
        return r?.status === 200 ? r.body : undefined;
      },
      `GET ${path}`,
      60_000,
      500,
    );

  const downloaded = async (...releases: string[]) => {
    expect((await api('/check', { forced: true })).status).toBe(200);
    await waitUntil(
      async () => {
        const status = await apiWhenUp('/status');
        return releases.every((r) => status.downloaded.includes(r));
      },
      `${releases.join(', ')} to be downloaded`,
      240_000,
      1000,
    );
  };

  /** The installer's decision about `component version` made after `since`. */
  const decided = (component: string, version: string, kinds: string, since: string, timeoutMs = 300_000) =>
    waitUntil(
      async () => {
        const { history } = await apiWhenUp(`/history?component=${component}&kind=${kinds}&limit=50`);
        return (history as { at: string; version?: string; kind: string; reason?: string }[]).find(
          (d) => d.version === version && d.at >= since,
        );
      },
      `${component} ${version} to be ${kinds}`,
      timeoutMs,
      1000,
    );

  const installUpdater = async (version: string) => {
    const since = new Date().toISOString();
    const { status, body } = await api('/install', { component: 'updater', version });
    expect(status, JSON.stringify(body)).toBe(202);
    return since;
  };

  /** Every service on `images`, healthy, with no helper, old container or duplicate left. */
  const expectOneVersion = async (images: Record<string, string>) => {
    await stack.healthy();
    expect(await stack.serviceImages()).toEqual(images);
    const names = (await docker('ps', '-a', '--format', '{{.Names}}')).split('\n');
    const ours = names.filter((n) => n.startsWith(stack.options.project));
    expect(ours.filter((n) => /aico-previous|self-update/.test(n))).toEqual([]);
    for (const service of UPDATER_SERVICES) {
      expect(
        ours.filter((n) => n.includes(`-${service}-`)),
        service,
      ).toEqual([stack.container(service)]);
    }
  };

  const helper = () => `${stack.container('installer')}-self-update`;
  const running = async (container: string) =>
    (await docker('inspect', '--format', '{{.State.Running}}', container).catch(() => 'false')) === 'true';

  it('puts every service back when the new installer does not start, and the old installer says why', {
    timeout: 600_000,
  }, async () => {
    await stack.publishUpdater('1.0.1', 'installer');
    await downloaded('updater@1.0.1');
    const since = await installUpdater('1.0.1');
    const outcome = await decided('updater', '1.0.1', 'rolled_back,failed,installed', since);
    expect(outcome.kind).toBe('rolled_back');
    expect(outcome.reason).toMatch(/new installer did not pass its health gate.*put back on 1\.0\.0/);
    await expectOneVersion(original);
    const status = await apiWhenUp('/status');
    expect(status.installed.updater).toBe('1.0.0');
    expect(status.self_update).toMatchObject({ version: '1.0.1', outcome: { result: 'rolled_back' } });
    expect(status.holds).toEqual(
      expect.arrayContaining([expect.objectContaining({ component: 'updater', version: '1.0.1' })]),
    );
  });

  it('a helper SIGKILLed while it swaps the installer is started again by the engine and puts everything back', {
    timeout: 600_000,
  }, async () => {
    released['1.1.0'] = await stack.publishUpdater('1.1.0');
    await downloaded('updater@1.1.0');
    const since = await installUpdater('1.1.0');
    // The old installer renamed aside: the helper is mid-swap of the installer itself.
    const previous = `${stack.container('installer')}-aico-previous`;
    await waitUntil(
      () =>
        docker('inspect', '--format', '{{.Name}}', previous).then(
          () => true,
          () => false,
        ),
      'the helper to begin the installer’s swap',
      240_000,
      50,
    );
    await stack.crash(helper());
    const outcome = await decided('updater', '1.1.0', 'rolled_back,failed,installed', since);
    expect(outcome.kind).toBe('rolled_back');
    expect(outcome.reason).toMatch(/helper stopped unexpectedly/);
    await expectOneVersion(original);
  });

  it('an old installer SIGKILLed after it started the helper comes back, and the helper finishes', {
    timeout: 600_000,
  }, async () => {
    const since = await installUpdater('1.1.0');
    await waitUntil(() => running(helper()), 'the helper to run', 120_000, 50);
    await stack.crash(stack.container('installer'));
    const outcome = await decided('updater', '1.1.0', 'rolled_back,failed,installed', since);
    expect(outcome.kind, outcome.reason).toBe('installed');
    await expectOneVersion(released['1.1.0'] as Record<string, string>);
  });

  it('a new installer SIGKILLed as it starts fails its gate (a restart), and every service goes back', {
    timeout: 600_000,
  }, async () => {
    const before = await stack.serviceImages();
    const next = await stack.publishUpdater('1.2.0');
    await downloaded('updater@1.2.0');
    const since = await installUpdater('1.2.0');
    await waitUntil(
      async () =>
        (await docker(
          'inspect',
          '--format',
          '{{.Image}} {{.State.Running}}',
          stack.container('installer'),
        ).catch(() => '')) === `${next.installer} true`,
      'the new installer to start',
      240_000,
      50,
    );
    await stack.crash(stack.container('installer'));
    const outcome = await decided('updater', '1.2.0', 'rolled_back,failed,installed', since);
    expect(outcome.kind).toBe('rolled_back');
    expect(outcome.reason).toMatch(/new installer did not pass its health gate: .*(exited|restarted)/);
    await expectOneVersion(before);
    expect((await apiWhenUp('/status')).installed.updater).toBe('1.1.0');
  });

  it('a backend release that needs a newer updater: the updater installs first through the helper (every service on it, healthy; events reach the bus; state came through; up -d keeps it), then the backend through the new services', {
    timeout: 600_000,
  }, async () => {
    released['1.3.0'] = await stack.publishUpdater('1.3.0');
    await stack.publish('1.1.0', 'healthy', { needsUpdater: '>=1.3.0' });
    await downloaded('updater@1.3.0', 'backend@1.1.0');
    const historyBefore = (await apiWhenUp('/history?limit=200')).history as unknown[];
    const trustedBefore = await installerStatus();
    // The dry run shows the helper's plan first, and changes nothing.
    const preview = await api('/install/plan', { component: 'updater', version: '1.3.0' });
    expect(preview.status, JSON.stringify(preview.body)).toBe(200);
    expect(preview.body.plan.steps.filter((s: string) => /^(helper|swap|commit)/.test(s))).toEqual([
      'helper:installer',
      ...['checker', 'downloader', 'bus-gateway', 'installer'].map((s) => `swap:${s}`),
      'commit:*',
    ]);
    expect(await stack.serviceImages()).toEqual(released['1.1.0']);

    const since = new Date().toISOString();
    const { status, body } = await api('/install', { component: 'backend', version: '1.1.0' });
    expect(status, JSON.stringify(body)).toBe(202);
    const backend = await decided('backend', '1.1.0', 'installed,rolled_back,failed,refused', since);
    expect(backend.kind, backend.reason).toBe('installed');
    expect(await stack.backendVersion()).toBe('1.1.0');
    const updater = await decided('updater', '1.3.0', 'installed', since);
    expect(updater.at < (backend as { at: string }).at).toBe(true);
    const plan = await decided('backend', '1.1.0', 'updater_first', since);
    expect(plan.reason).toMatch(
      /needs the update system >=1\.3\.0 \(1\.1\.0 runs here\): updater 1\.3\.0 installs first/,
    );

    const images = released['1.3.0'] as Record<string, string>;
    await expectOneVersion(images);
    for (const service of UPDATER_SERVICES) {
      const env = await docker('inspect', '--format', '{{json .Config.Env}}', stack.container(service));
      expect(env, service).toContain('AICO_UPDATE_VERSION=1.3.0');
    }
    const after = await apiWhenUp('/status');
    expect(after.installed).toMatchObject({ updater: '1.3.0', backend: '1.1.0' });
    expect(after.self_update).toMatchObject({
      version: '1.3.0',
      phase: 'reported',
      outcome: { result: 'committed' },
    });
    // Published while the gateway itself was being swapped, delivered to the bus once it was back.
    const messages = () => frontend.received.map((m) => m.frames.map((f) => f.toString('latin1')).join(' '));
    await waitUntil(
      () => messages().some((m) => /updater 1\.3\.0: installed/.test(m)),
      'the install completion on the bus',
      60_000,
    );
    expect(messages().some((m) => /self-update of updater 1\.3\.0: .*swap bus-gateway done/.test(m))).toBe(
      true,
    );
    // State: the history before is still there, the token still opens the API, the installer kept its
    // trusted TUF metadata (not back to the shipped root).
    const historyAfter = (await apiWhenUp('/history?limit=400')).history as unknown[];
    for (const entry of historyBefore) expect(historyAfter).toContainEqual(entry);
    const trustedAfter = await installerStatus();
    expect(trustedAfter.trusted_metadata.versions.root).toBe(trustedBefore.trusted_metadata.versions.root);
    expect(trustedAfter.trusted_metadata.versions.targets).toBeGreaterThanOrEqual(
      trustedBefore.trusted_metadata.versions.targets,
    );
    // The operator runs `up -d`: compose keeps the new versions and recreates nothing (the tags it
    // names and the image ids the containers record agree). (`--no-deps` would recreate: it changes
    // the configuration hash compose computes.)
    const containersBefore = await containerIds();
    await stack.compose('up', '-d');
    await expectOneVersion(images);
    expect(await containerIds()).toEqual(containersBefore);
    expect(await stack.backendVersion()).toBe('1.1.0');
  });

  const installerStatus = async () =>
    JSON.parse(
      await docker(
        'exec',
        stack.container('installer'),
        'node',
        '-e',
        "fetch('http://127.0.0.1:8083/status').then(r=>r.text()).then(t=>process.stdout.write(t))",
      ),
    );

  const containerIds = async () => {
    const ids: Record<string, string> = {};
    for (const service of UPDATER_SERVICES) {
      ids[service] = await docker('inspect', '--format', '{{.Id}}', stack.container(service));
    }
    return ids;
  };
});
