import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import {
  create,
  type Envelope,
  InstallStatus,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { docker, freePort, makeTempDir, waitUntil } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curveKeyPair } from 'zeromq';
import { Stack } from '../../scripts/stack.ts';
import { ZmqPeer } from '../../services/bus-gateway/test/support/peer.ts';

/*
 * The deployment as an operator runs it, proven end to end on the real Docker Engine with Compose v1:
 * base images made from this machine's binaries (infra/base-images.sh), the service images built from
 * the Dockerfile, docker-compose.yml with the development update server (profile dev), the gateway as
 * AICO's broker (infra/compose/broker.yml), and the example AICO stack (a sample backend at 1.0.0).
 * Then, only through the bus in AICO's wire format: 1.1.0 is published, found, downloaded, installed;
 * a broken 1.2.0 is installed, fails its health gate and is rolled back, which Prometheus (profile
 * monitoring) scrapes and alerts on; `up -d` keeps 1.1.0.
 */

describe.each(['v1', 'v2'] as const)('the deployment with Compose %s', (compose) => {
  const id = randomBytes(3).toString('hex');
  let stack: Stack;
  let frontend: ZmqPeer;
  // The frontend's stable key pair, which the broker's allow-list names (bus.zeromq.client_keys).
  const frontendKeys = curveKeyPair();

  beforeAll(async () => {
    stack = await Stack.up({
      project: `aicoupd${id}`,
      compose,
      repoDir: join(await makeTempDir('stack'), 'repo'),
      ports: {
        control: await freePort(),
        busPub: await freePort(),
        busSub: await freePort(),
        backend: await freePort(),
        prometheus: await freePort(),
      },
      backend: { container: `aico-backend-${id}`, image: `aico-example/backend:current-${id}` },
      frontendPublicKey: frontendKeys.publicKey,
    });
  }, 600_000);

  afterAll(async () => {
    frontend?.close();
    await stack?.down();
  });

  it('comes up healthy, read-only, without capabilities, as non-root where it can', {
    timeout: 180_000,
  }, async () => {
    await stack.healthy();
    for (const service of ['checker', 'downloader', 'installer', 'bus-gateway']) {
      const info = JSON.parse(await docker('inspect', stack.container(service)))[0];
      expect(info.HostConfig.Init, service).toBe(true);
      expect(info.Config.User, service).toBe(service === 'installer' ? '0:0' : 'node');
    }
    // Every container of the update system, Redis, NATS and Prometheus included.
    for (const service of [
      'redis',
      'nats',
      'update-server',
      'prometheus',
      'checker',
      'downloader',
      'installer',
      'bus-gateway',
    ]) {
      const info = JSON.parse(await docker('inspect', stack.container(service)))[0];
      expect(info.HostConfig.ReadonlyRootfs, service).toBe(true);
      expect(info.HostConfig.CapDrop, service).toEqual(['ALL']);
      expect(info.HostConfig.CapAdd ?? [], service).toEqual(
        ['redis', 'nats', 'installer'].includes(service) ? ['DAC_OVERRIDE'] : [],
      );
      expect(info.HostConfig.SecurityOpt, service).toContain('no-new-privileges:true');
    }
    // Another container, as an attacker would start one, on one of the stack's networks.
    const on = (network: 'default' | 'core', ...command: string[]) =>
      docker('run', '--rm', '--network', `${stack.options.project}_${network}`, ...command).catch(
        (error: Error) => error.message,
      );
    const redisCli = (...args: string[]) => ['redis:7-bookworm', 'redis-cli', '-h', 'redis', ...args];
    // Redis and NATS are on the internal network only: from the default network (where AICO's
    // containers are) they cannot even be resolved.
    expect(await on('default', ...redisCli('ping'))).not.toMatch(/^PONG$/);
    // On the internal network without credentials: Redis answers PING and nothing else, NATS refuses.
    expect(await on('core', ...redisCli('ping'))).toBe('PONG');
    expect(await on('core', ...redisCli('hset', 'aico-update:installed', 'backend', '0.0.1'))).toMatch(
      /NOPERM|NOAUTH/,
    );
    const natsAnonymous = await on(
      'core',
      ...['--workdir', '/app', 'aico-update/checker:local', 'node', '-e'],
      "import('@nats-io/transport-node').then(({connect})=>connect({servers:'nats://nats:4222'})).then(()=>console.log('connected'),e=>console.log(e.message))",
    );
    expect(natsAnonymous).toMatch(/Authorization Violation/);
    // NATS monitoring answers on its own loopback only: not from another container on the network.
    const fromGateway = await docker(
      'exec',
      stack.container('bus-gateway'),
      'node',
      '-e',
      "fetch('http://nats:8222/connz').then(()=>console.log('open'),()=>console.log('closed'))",
    );
    expect(fromGateway).toBe('closed');
    await waitUntil(
      async () => (await fetch(`${stack.controlUrl}/readyz`).catch(() => undefined))?.status === 200,
      'the bus gateway to be ready',
      30_000,
      500,
    );
    expect(await stack.backendVersion()).toBe('1.0.0');
  });

  it('keeps its control API to the owner: a token made on first start, nothing without it', async () => {
    const token = await stack.controlToken();
    expect(token.length).toBeGreaterThanOrEqual(32);
    expect((await fetch(`${stack.controlUrl}/api/v1/status`)).status).toBe(401);
    const page = await fetch(`${stack.controlUrl}/api/v1/install`, {
      method: 'POST',
      headers: { origin: 'http://evil.example', 'content-type': 'text/plain' },
      body: 'x',
    });
    expect(page.status).toBe(403);
    const status = await fetch(`${stack.controlUrl}/api/v1/status`, {
      headers: await stack.controlHeaders(),
    });
    expect(status.status).toBe(200);
    expect(await status.json()).toMatchObject({ installed: { backend: '1.0.0' } });
    // The installer's own trust: it refreshed its TUF state from the downloader's mirror.
    const installer = JSON.parse(
      await docker(
        'exec',
        stack.container('installer'),
        'node',
        '-e',
        "fetch('http://127.0.0.1:8083/status').then(r=>r.text()).then(t=>process.stdout.write(t))",
      ),
    );
    expect(installer).toMatchObject({ integrity: { drift: [] } });
    // The operator's page, built into the gateway's image: served from this origin only.
    const index = await fetch(`${stack.controlUrl}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-security-policy')).toMatch(/default-src 'none'; script-src 'self'/);
    expect(await index.text()).toContain('/assets/app.js');
    const script = await fetch(`${stack.controlUrl}/assets/app.js`);
    expect(script.status).toBe(200);
    expect((await script.text()).length).toBeGreaterThan(10_000);
  });

  it('updates the backend through the bus, rolls a broken release back, and compose keeps the update', {
    timeout: 600_000,
  }, async () => {
    frontend = new ZmqPeer(
      '127.0.0.1',
      stack.options.ports.busPub,
      stack.options.ports.busSub,
      await stack.brokerPublicKey(),
      frontendKeys,
    );
    await frontend.settle(1000);
    const check = async () => {
      const correlationId = randomUUID();
      await frontend.send(
        'update.check.request',
        UpdateCheckRequestSchema,
        create(UpdateCheckRequestSchema),
        {
          correlation_id: correlationId,
          forced: 'true',
        },
      );
      return (await frontend.answer(correlationId, UpdateCheckResponseSchema, 60_000)).payload;
    };
    const install = async (updateId: string) => {
      const correlationId = randomUUID();
      const request = create(InstallUpdateRequestSchema, { updateId, autoRestart: true });
      await frontend.send('update.install.request', InstallUpdateRequestSchema, request, {
        correlation_id: correlationId,
      });
      return (await frontend.answer(correlationId, InstallUpdateResponseSchema, 60_000)).payload;
    };
    const count = (topic: string) => frontend.received.filter((m) => m.topic === topic).length;
    const nth = (topic: string, n: number) => frontend.received.filter((m) => m.topic === topic)[n - 1];
    const completion = async (n: number) => {
      await waitUntil(() => count('update.install.complete') >= n, `install completion ${n}`, 120_000);
      return unpackPayload(
        nth('update.install.complete', n)?.envelope as Envelope,
        InstallUpdateResponseSchema,
      );
    };

    // 1.1.0: published → check → available → downloaded → install request → installed.
    await stack.publish('1.1.0');
    const checked = await check();
    expect(checked).toMatchObject({ updateAvailable: true });
    expect(checked.updateInfo?.updateId).toBe('backend-1.1.0');
    await waitUntil(() => count('update.available') >= 1, 'update.available', 60_000);
    await waitUntil(() => count('update.download.complete') >= 1, 'the 1.1.0 download', 120_000);
    expect(count('update.download.progress')).toBeGreaterThan(0);
    const accepted = await install('backend-1.1.0');
    expect(accepted, accepted.message).toMatchObject({
      success: true,
      status: InstallStatus.INSTALL_PENDING,
    });
    const installed = await completion(1);
    expect(installed, installed.message).toMatchObject({
      success: true,
      status: InstallStatus.INSTALL_COMPLETED,
    });
    expect(count('update.restart.scheduled')).toBeGreaterThan(0);
    expect(count('update.install.progress')).toBeGreaterThan(3);
    expect(await stack.backendVersion()).toBe('1.1.0');

    // A broken 1.2.0: installed on request, fails its health gate, rolled back to 1.1.0.
    await stack.publish('1.2.0', 'unhealthy');
    expect((await check()).updateInfo?.updateId).toBe('backend-1.2.0');
    await waitUntil(() => count('update.download.complete') >= 2, 'the 1.2.0 download', 120_000);
    expect(await install('backend-1.2.0')).toMatchObject({ success: true });
    const failure = await completion(2);
    expect(failure.success).toBe(false);
    expect(failure.message).toMatch(/rolled_back/);
    expect(await stack.backendVersion()).toBe('1.1.0');
    // Seen where the operator sees it: Prometheus scraped the rollback and its alert fires.
    const rollbacks = await waitUntil(
      async () => {
        const samples = await stack.query('aico_update_rollbacks_total');
        return samples.length > 0 && samples;
      },
      'Prometheus to scrape the rollback',
      60_000,
      1000,
    );
    expect(rollbacks).toEqual([
      {
        metric: expect.objectContaining({
          component: 'backend',
          reason: 'HEALTH_GATE_FAILED',
          service: 'installer',
        }),
        value: 1,
      },
    ]);
    expect(await stack.query('aico_update_installed_version_info{component="backend"}')).toEqual([
      { metric: expect.objectContaining({ version: '1.1.0' }), value: 1 },
    ]);
    const alert = await waitUntil(
      async () => (await stack.firingAlerts()).find((a) => a.labels.alertname === 'AicoUpdateRolledBack'),
      'the AicoUpdateRolledBack alert to fire',
      90_000,
      1000,
    );
    expect(alert.labels).toMatchObject({ component: 'backend', reason: 'HEALTH_GATE_FAILED' });

    // The operator runs `up -d` again: the backend keeps the installed version.
    await stack.compose('up', '-d');
    await waitUntil(
      async () => (await stack.backendVersion()) ?? false,
      'the backend to answer',
      30_000,
      500,
    );
    expect(await stack.backendVersion()).toBe('1.1.0');
  });
});
