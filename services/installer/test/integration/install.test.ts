import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ensureEventStream, StateKeys, Subjects, Topics } from '@aico-update/shared';
import {
  buildSampleBackend,
  docker,
  engineEventTime,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
  testTag,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import type { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DockerRuntime, PREVIOUS_SUFFIX } from '../../src/adapters/docker-runtime.ts';
import { InstallFailed, installRelease } from '../../src/handlers/install-release.ts';
import { testInstallDeps } from '../support/deps.ts';
import { lastOutcome, publisherFor, stageRelease } from '../support/stage.ts';

/* The installer against the real Docker Engine, with sample busybox "AICO backend" images. */

let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let cacheDir: string;
let deps: Awaited<ReturnType<typeof testInstallDeps>>;
let registry: Registry;
let name: string;
let network: string;
let volume: string;
let completes: { outcome: string; reason?: string }[];
const runtime = new DockerRuntime();
const deploymentTag = testTag('aico-test/sample-backend', 'deployed');
const tags: string[] = [];

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  await ensureEventStream(nc);
  nc.subscribe(Subjects.event(Topics.installComplete), {
    callback: (_e, m) => void completes.push(m.json()),
  });
});

afterAll(async () => {
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

beforeEach(async () => {
  completes = [];
  await redisClient.flushall();
  await ensureEventStream(nc);
  const id = randomBytes(4).toString('hex');
  name = `aico-test-backend-${id}`;
  network = `aico-test-net-${id}`;
  volume = `aico-test-data-${id}`;
  cacheDir = await makeTempDir('installer-cache');
  await buildSampleBackend(deploymentTag, '1.0.0');
  tags.push(deploymentTag);
  await docker('network', 'create', network);
  await docker(
    'run',
    '-d',
    '--init',
    '--name',
    name,
    '--network',
    network,
    '--network-alias',
    'backend',
    '--restart',
    'unless-stopped',
    '-e',
    'AICO_TENANT=home',
    '--label',
    'com.docker.compose.service=backend',
    '--label',
    'com.docker.compose.project=aico',
    '-v',
    `${volume}:/data`,
    '-p',
    '127.0.0.1::8771',
    deploymentTag,
  );
  await runtime.waitHealthy(name, { timeoutMs: 20_000, soakMs: 0 });
  await redisClient.hset(StateKeys.installed, 'backend', '1.0.0');
  deps = await testInstallDeps(
    { runtime, redis: redisClient, nc },
    {
      cache_dir: cacheDir,
      state_dir: join(cacheDir, 'installer-state'),
      services: { backend: name },
      health_timeout_seconds: 15,
      soak_seconds: 1,
      backup: { dir: join(cacheDir, 'backups') },
      prepare_timeout_seconds: 0.3,
    },
  );
  registry = deps.registry;
});

afterEach(async () => {
  await docker('rm', '-f', name, `${name}${PREVIOUS_SUFFIX}`).catch(() => undefined);
  await docker('network', 'rm', network).catch(() => undefined);
  await docker('volume', 'rm', volume).catch(() => undefined);
  for (const tag of tags.splice(0)) await docker('rmi', '-f', tag).catch(() => undefined);
});

async function inspect(container: string) {
  return JSON.parse(await docker('inspect', container))[0];
}

async function health(container: string): Promise<{ version: string }> {
  const port = (await inspect(container)).NetworkSettings.Ports['8771/tcp'][0].HostPort;
  return (await fetch(`http://127.0.0.1:${port}/api/v1/health`)).json() as Promise<{ version: string }>;
}

async function release(
  version: string,
  behaviour: 'healthy' | 'unhealthy' | 'exits' = 'healthy',
  options: { critical?: boolean } = {},
) {
  const tag = testTag('aico-test/sample-backend', version);
  const id = await buildSampleBackend(tag, version, behaviour);
  tags.push(tag);
  return {
    id,
    job: await stageRelease(cacheDir, 'backend', version, [{ service: 'backend', tag }], undefined, options),
  };
}

/** The installer service's environment for this test's deployment and publisher. */
async function serviceEnv(extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    AICO_INSTALLER_CACHE_DIR: cacheDir,
    AICO_INSTALLER_STATE_DIR: join(cacheDir, 'installer-state'),
    AICO_TUF_STATE_DIR: join(cacheDir, 'installer-state', 'tuf'),
    AICO_TUF_TRUSTED_ROOT: (await publisherFor(cacheDir)).trustedRootPath,
    AICO_INSTALLER_SERVICES: `backend=${name}`,
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_HOST: '127.0.0.1',
    AICO_HTTP_PORT: '0',
    ...extra,
  };
}

describe('installer on the real Docker Engine', () => {
  it('swaps to the new version with the old configuration, records it, and keeps the tag compose names', async () => {
    const before = await inspect(name);
    const { id, job } = await release('1.1.0');
    expect(await installRelease(deps, deps.seal.seal(job))).toEqual({
      outcome: 'installed',
      services: ['backend'],
    });

    const after = await inspect(name);
    expect(after.Image).toBe(id);
    expect(after.Id).not.toBe(before.Id);
    // Stop-first: the engine's event log shows the old container died before the new one started.
    const since = Math.floor(Date.parse(before.State.StartedAt) / 1000) - 1;
    const events = (id: string, event: string) => engineEventTime(id, event, since);
    expect(await events(before.Id, 'die')).toBeLessThan(await events(after.Id, 'start'));
    expect(await docker('ps', '-aq', '--filter', `id=${before.Id}`)).toBe('');
    const installs = await lastOutcome(redisClient);
    expect(installs).toMatchObject({ version: '1.1.0', outcome: 'installed' });
    expect(await health(name)).toMatchObject({ version: '1.1.0' });
    expect(after.State.Health.Status).toBe('healthy');
    // The deployment's configuration is preserved; what the old image contributed is not pinned.
    expect(after.HostConfig).toEqual({ ...before.HostConfig });
    expect(after.Config.Env).toContain('AICO_TENANT=home');
    expect(after.Config.Labels).toMatchObject({
      'com.docker.compose.service': 'backend',
      'com.docker.compose.project': 'aico',
    });
    expect(after.Config.Labels['org.opencontainers.image.version']).toBe('1.1.0');
    expect(after.Config.Image).toBe(deploymentTag);
    expect(after.Mounts.map((m: { Name: string; Destination: string }) => [m.Name, m.Destination])).toEqual([
      [volume, '/data'],
    ]);
    expect(after.NetworkSettings.Networks[network].Aliases).toContain('backend');
    expect(await docker('image', 'inspect', '--format', '{{.Id}}', deploymentTag)).toBe(id);
    await expect(docker('inspect', `${name}${PREVIOUS_SUFFIX}`)).rejects.toThrow();
    expect(await redisClient.hget(StateKeys.installed, 'backend')).toBe('1.1.0');
    const metrics = await registry.metrics();
    expect(metrics).toMatch(
      /aico_update_installs_total\{component="backend",outcome="installed",service="installer-test"\} 1/,
    );
    expect(metrics).toMatch(
      /aico_update_install_downtime_seconds_count\{[^}]*target_service="backend"[^}]*\} 1/,
    );
    expect(metrics).toMatch(
      /aico_update_install_phase_duration_seconds_count\{[^}]*phase="health-gate"[^}]*\} 1/,
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(completes).toEqual([expect.objectContaining({ outcome: 'installed' })]);
  });

  it.each([
    ['unhealthy', /reported unhealthy by its HEALTHCHECK/],
    ['exits', /exited|restarted/],
  ] as const)(
    'a new version that is %s is rolled back: the old one runs, healthy, and nothing is recorded as installed',
    async (behaviour, reason) => {
      const before = await inspect(name);
      const { job } = await release('1.2.0', behaviour);
      const error = await installRelease(deps, deps.seal.seal(job)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(InstallFailed);
      expect(error).toMatchObject({
        code: 'HEALTH_GATE_FAILED',
        rolledBack: true,
        message: expect.stringMatching(reason),
      });
      const after = await inspect(name);
      expect(after.Id).toBe(before.Id);
      expect(after.State.Running).toBe(true);
      expect(await health(name)).toMatchObject({ version: '1.0.0' });
      expect(await docker('image', 'inspect', '--format', '{{.Id}}', deploymentTag)).toBe(before.Image);
      expect(await redisClient.hget(StateKeys.installed, 'backend')).toBe('1.0.0');
      expect(await registry.metrics()).toMatch(
        /aico_update_rollbacks_total\{component="backend",reason="HEALTH_GATE_FAILED",service="installer-test"\} 1/,
      );
      expect(await lastOutcome(redisClient)).toMatchObject({
        version: '1.2.0',
        outcome: 'rolled_back',
      });
    },
  );

  it('an image whose id differs from the signed one aborts before anything is stopped', async () => {
    const before = await inspect(name);
    const tag = testTag('aico-test/sample-backend', '1.3.0');
    await buildSampleBackend(tag, '1.3.0');
    tags.push(tag);
    const job = await stageRelease(cacheDir, 'backend', '1.3.0', [{ service: 'backend', tag }], (image) => ({
      ...image,
      image_id: `sha256:${'0'.repeat(64)}`,
    }));
    await expect(installRelease(deps, deps.seal.seal(job))).rejects.toMatchObject({
      code: 'IMAGE_ID_MISMATCH',
      rolledBack: false,
    });
    const after = await inspect(name);
    expect(after.Id).toBe(before.Id);
    expect(after.State.StartedAt).toBe(before.State.StartedAt);
  });

  it('as a service: takes install jobs from BullMQ, one at a time, and does not retry a rolled-back release', async () => {
    const { installerConfigSchema } = await import('../../src/config.ts');
    const { startInstaller } = await import('../../src/main.ts');
    const { loadConfig, Queues, installJobId } = await import('@aico-update/shared');
    const { Queue, QueueEvents } = await import('bullmq');
    const config = loadConfig(installerConfigSchema, {
      env: await serviceEnv({
        AICO_INSTALLER_HEALTH_TIMEOUT_SECONDS: '15',
        AICO_INSTALLER_SOAK_SECONDS: '1',
      }),
    });
    const installer = await startInstaller(config, { logger: pino({ level: 'silent' }) });
    const queue = new Queue(Queues.install, { connection: redisClient });
    const events = new QueueEvents(Queues.install, { connection: { url: redis.url } });
    try {
      // Jobs as the downloader queues them (unsealed): critical releases run at once by policy.
      const good = await release('1.1.0', 'healthy', { critical: true });
      const bad = await release('1.2.0', 'unhealthy', { critical: true });
      const first = await queue.add('install', good.job, {
        jobId: installJobId(good.job.release),
        attempts: 3,
      });
      await first.waitUntilFinished(events, 60_000);
      expect((await inspect(name)).Image).toBe(good.id);
      const second = await queue.add('install', bad.job, {
        jobId: installJobId(bad.job.release),
        attempts: 3,
      });
      await expect(second.waitUntilFinished(events, 60_000)).rejects.toThrow(/HEALTH_GATE_FAILED/);
      expect((await queue.getJob(second.id as string))?.attemptsMade).toBe(1);
      expect((await inspect(name)).Image).toBe(good.id);
      const status = await (await fetch(`http://127.0.0.1:${installer.port}/status`)).json();
      // The rolled-back release is quarantined: not installed by itself again, reported with its reason.
      expect(status).toMatchObject({
        installed: { backend: '1.1.0' },
        holds: [{ version: '1.2.0', kind: 'quarantined', code: 'HEALTH_GATE_FAILED' }],
        history: [
          { version: '1.2.0', kind: 'quarantined', code: 'HEALTH_GATE_FAILED' },
          { version: '1.2.0', outcome: 'rolled_back' },
          { version: '1.1.0', outcome: 'installed' },
        ],
      });
    } finally {
      await events.close();
      await queue.close();
      await installer.stop();
    }
  });

  it('an automatic non-critical install waits for update.preferred_time and says when (update.restart.scheduled)', async () => {
    const { installerConfigSchema } = await import('../../src/config.ts');
    const { startInstaller } = await import('../../src/main.ts');
    const { loadConfig, Queues, installJobId } = await import('@aico-update/shared');
    const { Queue } = await import('bullmq');
    // A window six hours from now, in UTC: certainly closed.
    const opens = new Date(Date.now() + 6 * 3600_000);
    opens.setUTCSeconds(0, 0);
    const preferred = `${String(opens.getUTCHours()).padStart(2, '0')}:${String(opens.getUTCMinutes()).padStart(2, '0')}`;
    const scheduled: { scheduled_for: string; reason: string }[] = [];
    nc.subscribe(Subjects.event(Topics.restartScheduled), {
      callback: (_e, m) => void scheduled.push(m.json()),
    });
    const config = loadConfig(installerConfigSchema, {
      env: await serviceEnv({
        AICO_UPDATE_AUTO_INSTALL: 'true',
        AICO_UPDATE_PREFERRED_TIME: preferred,
        AICO_INSTALLER_TIMEZONE: 'UTC',
        AICO_INSTALLER_WINDOW_MINUTES: '60',
      }),
    });
    const installer = await startInstaller(config, { logger: pino({ level: 'silent' }) });
    const queue = new Queue(Queues.install, { connection: redisClient });
    try {
      const before = await inspect(name);
      const { job } = await release('1.1.0');
      const added = await queue.add(
        'install',
        { ...job, reason: 'auto_install' },
        { jobId: installJobId(job.release) },
      );
      for (let i = 0; i < 100 && (await queue.getJobState(added.id as string)) !== 'delayed'; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await queue.getJobState(added.id as string)).toBe('delayed');
      expect(scheduled).toEqual([
        expect.objectContaining({ scheduled_for: opens.toISOString(), reason: 'auto_install' }),
      ]);
      expect((await inspect(name)).Id).toBe(before.Id);
      expect(await redisClient.hget(StateKeys.installed, 'backend')).toBe('1.0.0');
    } finally {
      await queue.close();
      await installer.stop();
    }
  });
});
