import { join } from 'node:path';
import { ensureEventStream, type InstallJob, StateKeys } from '@aico-update/shared';
import { makeTempDir, type SpawnedServer, spawnNats, spawnRedis } from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../src/adapters/docker-runtime.ts';
import { resumeInstalls, skipRelease } from '../../src/handlers/commands.ts';
import { installRelease } from '../../src/handlers/install-release.ts';
import { SampleDeployment } from '../support/deployment.ts';
import { testInstallDeps } from '../support/deps.ts';
import { stageRelease } from '../support/stage.ts';

/*
 * What the installer will not install by itself, on the real Docker Engine: after N failed automatic
 * installs the circuit breaker pauses the component's automatic installs until an operator resumes them
 * (metric and history say so); a release the user skipped is not installed by itself either.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let dir: string;
let deployment: SampleDeployment;
const runtime = new DockerRuntime();

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  await ensureEventStream(nc);
});

afterAll(async () => {
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

beforeEach(async () => {
  await redisClient.flushall();
  await redisClient.hset(StateKeys.installed, 'backend', '1.0.0');
  dir = await makeTempDir('installer-holds');
  deployment = await new SampleDeployment().start();
});

afterEach(async () => {
  await deployment.remove();
});

/** An automatic install of a critical release, queued as the downloader queues it (no seal). */
const automatic = (version: string): InstallJob => ({
  v: 1,
  release: { component: 'backend', version },
  reason: 'critical',
});

describe('holds on automatic installs', () => {
  it('two failed automatic installs pause the component until an operator resumes it; a skipped release waits too', async () => {
    const cacheDir = join(dir, 'cache');
    const deps = await testInstallDeps(
      { runtime, redis: redisClient, nc },
      {
        cache_dir: cacheDir,
        services: { backend: deployment.name },
        health_timeout_seconds: 6,
        soak_seconds: 1,
        prepare_timeout_seconds: 0.2,
        circuit_breaker_failures: 2,
        circuit_breaker_hours: 1,
      },
    );
    const commands = { queue: deps.queue, install: deps };
    for (const [version, behaviour] of [
      ['1.1.0', 'unhealthy'],
      ['1.2.0', 'exits'],
      ['1.3.0', 'healthy'],
    ] as const) {
      await stageRelease(
        cacheDir,
        'backend',
        version,
        [{ service: 'backend', tag: await deployment.image(version, behaviour) }],
        undefined,
        {
          critical: true,
        },
      );
    }
    const paused = async () =>
      (await deps.registry.getSingleMetricAsString('aico_update_auto_install_paused')).trim();

    await expect(installRelease(deps, automatic('1.1.0'))).rejects.toMatchObject({
      code: 'HEALTH_GATE_FAILED',
    });
    expect(await paused()).not.toMatch(/component="backend"\} 1/);
    await expect(installRelease(deps, automatic('1.2.0'))).rejects.toMatchObject({ rolledBack: true });
    expect(await paused()).toMatch(/aico_update_auto_install_paused\{[^}]*component="backend"[^}]*\} 1/);
    expect(await deps.holds.paused()).toEqual([
      expect.objectContaining({ component: 'backend', failures: 2 }),
    ]);

    // The breaker is open: a good critical release is not installed by itself; nothing changes.
    await expect(installRelease(deps, automatic('1.3.0'))).rejects.toMatchObject({ code: 'CIRCUIT_OPEN' });
    expect(await deployment.version()).toBe('1.0.0');

    // An operator resumes; the user skips 1.3.0: still not installed by itself.
    expect(await resumeInstalls(commands, { v: 1, component: 'backend', source: 'test' })).toMatchObject({
      accepted: true,
      message: expect.stringContaining('resumed'),
    });
    expect(await paused()).not.toMatch(/component="backend"\} 1/);
    await skipRelease(commands, { v: 1, component: 'backend', version: '1.3.0', skip: true, source: 'test' });
    await expect(installRelease(deps, automatic('1.3.0'))).rejects.toMatchObject({ code: 'SKIPPED' });
    expect(await deployment.version()).toBe('1.0.0');

    // The skip taken back, it installs by itself.
    await skipRelease(commands, {
      v: 1,
      component: 'backend',
      version: '1.3.0',
      skip: false,
      source: 'test',
    });
    await expect(installRelease(deps, automatic('1.3.0'))).resolves.toMatchObject({ outcome: 'installed' });
    expect(await deployment.version()).toBe('1.3.0');

    // Every decision is in the history, with its reason; the quarantines were settled by the install.
    const kinds = (await redisClient.lrange(StateKeys.installHistory, 0, -1))
      .map((e) => JSON.parse(e) as { kind: string; version?: string })
      .map((e) => `${e.kind}${e.version ? ` ${e.version}` : ''}`)
      .reverse();
    expect(kinds).toEqual([
      'rolled_back 1.1.0',
      'quarantined 1.1.0',
      'rolled_back 1.2.0',
      'quarantined 1.2.0',
      'circuit_open 1.2.0',
      'refused 1.3.0',
      'resumed',
      'skipped 1.3.0',
      'refused 1.3.0',
      'unskipped 1.3.0',
      'installed 1.3.0',
    ]);
    expect(await deps.holds.holds()).toEqual([]);
    await deps.queue.close();
  }, 180_000);

  it('a backend release the checker held for stranding frontend devices is not installed by itself; an operator may', async () => {
    const cacheDir = join(dir, 'cache');
    const deps = await testInstallDeps(
      { runtime, redis: redisClient, nc },
      {
        cache_dir: cacheDir,
        services: { backend: deployment.name },
        soak_seconds: 1,
        prepare_timeout_seconds: 0.2,
      },
    );
    const staged = await stageRelease(
      cacheDir,
      'backend',
      '1.1.0',
      [{ service: 'backend', tag: await deployment.image('1.1.0') }],
      undefined,
      { critical: true },
    );
    // The checker's last check, as it writes it: 1.1.0 held back, with what it would break.
    await redisClient.set(
      StateKeys.lastCheck,
      JSON.stringify({
        v: 1,
        check_id: 'c1',
        reason: 'schedule',
        forced: false,
        channel: 'stable',
        checked_at: new Date().toISOString(),
        duration_ms: 1,
        outcome: 'up_to_date',
        cached: false,
        components: [
          {
            component: 'backend',
            installed: '1.0.0',
            held: [
              {
                component: 'backend',
                version: '1.1.0',
                kind: 'strands_devices',
                reason: 'backend 1.1.0 would stop serving 2 registered device(s)',
                at: new Date().toISOString(),
              },
            ],
          },
        ],
      }),
    );
    await expect(installRelease(deps, automatic('1.1.0'))).rejects.toMatchObject({
      code: 'STRANDS_DEVICES',
      message: expect.stringContaining('2 registered device'),
    });
    expect(await deployment.version()).toBe('1.0.0');
    await expect(installRelease(deps, deps.seal.seal(staged))).resolves.toMatchObject({
      outcome: 'installed',
    });
    expect(await deployment.version()).toBe('1.1.0');
    await deps.queue.close();
  }, 120_000);
});
