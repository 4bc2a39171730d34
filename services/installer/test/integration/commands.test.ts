import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type CommandReply,
  ExtraTopics,
  ensureEventStream,
  loadConfig,
  StateKeys,
  Subjects,
  Topics,
} from '@aico-update/shared';
import {
  engineEventTime,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
  waitUntil,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../src/adapters/docker-runtime.ts';
import { installerConfigSchema } from '../../src/config.ts';
import { installRelease } from '../../src/handlers/install-release.ts';
import { type RunningInstaller, startInstaller } from '../../src/main.ts';
import { SampleDeployment } from '../support/deployment.ts';
import { testInstallDeps } from '../support/deps.ts';
import { lastOutcome, markDownloaded, publisherFor, stageRelease } from '../support/stage.ts';

/*
 * The installer as operators drive it: install and rollback commands over NATS (what the bus gateway
 * and the control API send), staged installs that wait for a restart, and start-first swaps.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let dir: string;
let deployment: SampleDeployment;
let completes: { outcome: string; release: { version: string }; backup_id?: string }[];
const runtime = new DockerRuntime();

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
  await redisClient.hset(StateKeys.installed, 'backend', '1.0.0');
  dir = await makeTempDir('installer-commands');
});

afterEach(async () => {
  await deployment.remove();
});

async function command(topic: string, body: unknown): Promise<CommandReply & { error?: { code: string } }> {
  const reply = await nc.request(`aicoupd.cmd.${topic}`, JSON.stringify(body), { timeout: 10_000 });
  return reply.json();
}

describe('installer commands over NATS', () => {
  it('installs only a downloaded, verified release on request, then rolls it back with its data on request', async () => {
    deployment = await new SampleDeployment().start();
    const cacheDir = join(dir, 'cache');
    const config = loadConfig(installerConfigSchema, {
      env: {
        AICO_INSTALLER_CACHE_DIR: cacheDir,
        AICO_INSTALLER_STATE_DIR: join(dir, 'state'),
        AICO_TUF_STATE_DIR: join(dir, 'state', 'tuf'),
        AICO_TUF_TRUSTED_ROOT: (await publisherFor(cacheDir)).trustedRootPath,
        AICO_INSTALLER_SERVICES: `backend=${deployment.name}`,
        AICO_INSTALLER_BACKUP_DIR: join(dir, 'backups'),
        AICO_INSTALLER_BACKUP_PATHS: 'backend=/data',
        AICO_INSTALLER_SOAK_SECONDS: '1',
        AICO_INSTALLER_PREPARE_TIMEOUT_SECONDS: '0.2',
        AICO_REDIS_URL: redis.url,
        AICO_NATS_SERVERS: nats.url,
        AICO_HTTP_HOST: '127.0.0.1',
        AICO_HTTP_PORT: '0',
      },
    });
    const installer: RunningInstaller = await startInstaller(config, { logger: pino({ level: 'silent' }) });
    try {
      expect(await command(Topics.installRequest, { request_id: 'r1' })).toMatchObject({
        request_id: 'r1',
        accepted: false,
        code: 'NOT_DOWNLOADED',
      });
      expect(await command(Topics.installRequest, { component: 'nope' })).toMatchObject({
        error: { code: 'BAD_REQUEST' },
      });
      const job = await stageRelease(cacheDir, 'backend', '1.1.0', [
        { service: 'backend', tag: await deployment.image('1.1.0') },
      ]);
      await markDownloaded(redisClient, job);
      // A manifest changed after verification is refused: nothing unsigned gets installed.
      const manifest = join(cacheDir, 'manifests', 'backend@1.1.0.json');
      const signed = await readFile(manifest);
      await appendFile(manifest, ' ');
      expect(await command(Topics.installRequest, {})).toMatchObject({
        accepted: false,
        code: 'MANIFEST_NOT_SIGNED',
      });
      await writeFile(manifest, signed);

      expect(await command(Topics.installRequest, { request_id: 'r2' })).toMatchObject({
        request_id: 'r2',
        accepted: true,
        job_id: 'install-backend-1.1.0',
      });
      const installed = await waitUntil(
        () => completes.find((c) => c.outcome === 'installed'),
        'the install',
        60_000,
      );
      expect(await deployment.version()).toBe('1.1.0');
      expect(installed.backup_id).toMatch(/^backend-1\.0\.0-/);
      expect(await deployment.exec(deployment.name, 'ls /data')).toContain('written-by-1.1.0');

      expect(
        await command(ExtraTopics.rollbackRequest, { backup_id: installed.backup_id, source: 'test' }),
      ).toMatchObject({ accepted: true });
      const rolledBack = await waitUntil(
        () => completes.find((c) => c.outcome === 'rolled_back'),
        'the rollback',
        60_000,
      );
      expect(rolledBack.release.version).toBe('1.1.0');
      expect(await deployment.version()).toBe('1.0.0');
      expect(await deployment.exec(deployment.name, 'ls /data')).not.toContain('written-by-1.1.0');
      expect(await redisClient.hget(StateKeys.installed, 'backend')).toBe('1.0.0');
      expect(await lastOutcome(redisClient)).toMatchObject({
        version: '1.1.0',
        outcome: 'rolled_back',
        reason: expect.stringMatching(/operator request from test, data restored from backend-1\.0\.0-/),
      });
      // A rollback undoes the last install once.
      expect(await command(ExtraTopics.rollbackRequest, {})).toMatchObject({
        accepted: false,
        code: 'NOTHING_TO_ROLL_BACK',
      });
      const metrics = await (await fetch(`http://127.0.0.1:${installer.port}/metrics`)).text();
      expect(metrics).toMatch(
        /aico_update_rollbacks_total\{component="backend",reason="OPERATOR_REQUEST"[^}]*\} 1/,
      );
    } finally {
      await installer.stop();
    }
  });

  it('a staged install loads and verifies but changes nothing, announces update.restart.required, and applies on the next request', async () => {
    deployment = await new SampleDeployment().start();
    const required: { version: string; message: string }[] = [];
    const sub = nc.subscribe(Subjects.event(Topics.restartRequired), {
      callback: (_e, m) => void required.push(m.json()),
    });
    const deps = await testInstallDeps(
      { runtime, redis: redisClient, nc },
      {
        cache_dir: join(dir, 'cache'),
        state_dir: join(dir, 'state'),
        services: { backend: deployment.name },
        soak_seconds: 1,
        prepare_timeout_seconds: 0.2,
      },
    );
    const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
      { service: 'backend', tag: await deployment.image('1.1.0') },
    ]);
    const before = await deployment.inspect();
    expect(await installRelease(deps, deps.seal.seal({ ...job, auto_restart: false }))).toMatchObject({
      outcome: 'staged',
    });
    expect((await deployment.inspect()).State.StartedAt).toBe(before.State.StartedAt);
    expect(await runtime.imageExists(await stagedImageId(dir))).toBe(true);
    await waitUntil(() => required[0], 'update.restart.required');
    expect(required[0]).toMatchObject({
      version: '1.1.0',
      message: expect.stringMatching(/when backend restarts/),
    });
    expect(await redisClient.hget(StateKeys.installed, 'backend')).toBe('1.0.0');
    expect(await installRelease(deps, deps.seal.seal(job))).toMatchObject({ outcome: 'installed' });
    expect(await deployment.version()).toBe('1.1.0');
    sub.unsubscribe();
  });

  it('a start-first swap starts the new container before the old one stops', async () => {
    deployment = await new SampleDeployment().start({ hostPort: 'none' });
    const deps = await testInstallDeps(
      { runtime, redis: redisClient, nc },
      {
        cache_dir: join(dir, 'cache'),
        state_dir: join(dir, 'state'),
        services: { backend: deployment.name },
        strategy: { backend: 'start-first' },
        soak_seconds: 1,
        prepare_timeout_seconds: 0.2,
      },
    );
    const before = await deployment.inspect();
    const since = Math.floor(Date.now() / 1000) - 1;
    const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
      { service: 'backend', tag: await deployment.image('1.1.0') },
    ]);
    expect(await installRelease(deps, deps.seal.seal(job))).toMatchObject({ outcome: 'installed' });
    const after = await deployment.inspect();
    expect(after.Id).not.toBe(before.Id);
    expect(after.Config.Labels['org.opencontainers.image.version']).toBe('1.1.0');
    // Joined the service's network and alias once ready; the old one left them before it stopped.
    expect(after.NetworkSettings.Networks[deployment.network].Aliases).toContain('backend');
    const eventAt = (id: string, event: string) => engineEventTime(id, event, since);
    // The new one was running (and healthy) before the old one was told to stop.
    expect(await eventAt(after.Id, 'start')).toBeLessThan(await eventAt(before.Id, 'kill'));
    expect(await eventAt(after.Id, 'health_status: healthy')).toBeLessThan(await eventAt(before.Id, 'kill'));
  });
});

async function stagedImageId(base: string): Promise<string> {
  const manifest = JSON.parse(await readFile(join(base, 'cache', 'manifests', 'backend@1.1.0.json'), 'utf8'));
  return manifest.images[0].image_id;
}
