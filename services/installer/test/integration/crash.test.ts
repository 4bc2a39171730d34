import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { installJobId, Queues, StateKeys, Subjects, Topics } from '@aico-update/shared';
import {
  buildSampleBackend,
  docker,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
  testTag,
  waitUntil,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREVIOUS_SUFFIX } from '../../src/adapters/docker-runtime.ts';
import { HISTORY_KEY } from '../../src/handlers/install-release.ts';
import { publisherFor, stageRelease } from '../support/stage.ts';

/*
 * The installer process SIGKILLed at each step of the journal and started again: every time the host
 * ends consistent and healthy, and the interrupted install completes by replay.
 */

const main = resolve(import.meta.dirname, '../../src/main.ts');
const KILL_POINTS = [
  'load-image:started',
  'check-healthy:done',
  'backup:done',
  'swap:started',
  'swap:done',
  'health-gate:started',
  'health-gate:done',
  'commit:started',
];

let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let cacheDir: string;
let oldId: string;
let newId: string;
let job: Awaited<ReturnType<typeof stageRelease>>;
let trustedRoot: string;
const tag = testTag('aico-test/crash-backend', 'deployed');
const nextTag = testTag('aico-test/crash-backend', '1.1.0');
const children: ChildProcess[] = [];

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis({ persistent: true }), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  cacheDir = await makeTempDir('crash-cache');
  oldId = await buildSampleBackend(tag, '1.0.0');
  newId = await buildSampleBackend(nextTag, '1.1.0');
  // Critical: the installer runs it at once by policy, as an unsealed job from the downloader.
  job = await stageRelease(cacheDir, 'backend', '1.1.0', [{ service: 'backend', tag: nextTag }], undefined, {
    critical: true,
  });
  trustedRoot = (await publisherFor(cacheDir)).trustedRootPath;
}, 120_000);

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
  await docker('rmi', '-f', tag, newId, oldId).catch(() => undefined);
});

function startInstaller(name: string, stateDir: string): ChildProcess {
  const child = spawn(process.execPath, [main], {
    stdio: 'ignore',
    env: {
      PATH: process.env.PATH ?? '',
      AICO_INSTALLER_CACHE_DIR: cacheDir,
      AICO_INSTALLER_STATE_DIR: stateDir,
      AICO_TUF_STATE_DIR: join(stateDir, 'tuf'),
      AICO_TUF_TRUSTED_ROOT: trustedRoot,
      AICO_INSTALLER_SERVICES: `backend=${name}`,
      AICO_INSTALLER_SOAK_SECONDS: '1',
      AICO_INSTALLER_HEALTH_TIMEOUT_SECONDS: '20',
      AICO_INSTALLER_LOCK_SECONDS: '5',
      AICO_INSTALLER_BACKUP_DIR: join(stateDir, 'backups'),
      AICO_INSTALLER_BACKUP_PATHS: 'backend=/data',
      AICO_INSTALLER_PREPARE_TIMEOUT_SECONDS: '0.2',
      AICO_REDIS_URL: redis.url,
      AICO_NATS_SERVERS: nats.url,
      AICO_HTTP_HOST: '127.0.0.1',
      AICO_HTTP_PORT: '0',
    },
  });
  children.push(child);
  return child;
}

describe('installer crash recovery', () => {
  it.each(KILL_POINTS)(
    'killed at %s: restarted, the host is consistent and healthy, and the install completes',
    async (point) => {
      const id = randomBytes(4).toString('hex');
      const name = `aico-crash-${id}`;
      const stateDir = join(cacheDir, `state-${id}`);
      await redisClient.flushall();
      await redisClient.hset(StateKeys.installed, 'backend', '1.0.0');
      await docker('tag', oldId, tag);
      if (point === 'load-image:started') await docker('rmi', '-f', newId).catch(() => undefined);
      await docker(
        'run',
        '-d',
        '--init',
        '--name',
        name,
        '--restart',
        'unless-stopped',
        '-v',
        `${name}-data:/data`,
        tag,
      );
      try {
        await waitUntil(
          async () => (await docker('inspect', '--format', '{{.State.Health.Status}}', name)) === 'healthy',
          'the old container to be healthy',
          20_000,
        );

        const first = startInstaller(name, stateDir);
        const [kind, status] = point.split(':');
        const killed = new Promise<void>((resolveKill) => {
          const sub = nc.subscribe(Subjects.event(Topics.installProgress), {
            callback: (_e, m) => {
              const p = m.json<{ step: string; status: string }>();
              if (p.step === kind && p.status === status) {
                first.kill('SIGKILL');
                sub.unsubscribe();
                resolveKill();
              }
            },
          });
        });
        const queue = new Queue(Queues.install, { connection: redisClient });
        await queue.add('install', job, { jobId: `${installJobId(job.release)}-${id}`, attempts: 1 });
        await queue.close();
        await killed;
        await new Promise((r) => first.once('exit', r));

        startInstaller(name, stateDir);
        // Consistent and healthy, then installed by replay.
        await waitUntil(
          async () => (await redisClient.hget(StateKeys.installed, 'backend')) === '1.1.0',
          'the install to complete',
          60_000,
        );
        const state = JSON.parse(await docker('inspect', name))[0];
        expect(state.Image).toBe(newId);
        expect(state.State.Running).toBe(true);
        await waitUntil(
          async () => (await docker('inspect', '--format', '{{.State.Health.Status}}', name)) === 'healthy',
          'healthy',
          20_000,
        );
        await expect(docker('inspect', `${name}${PREVIOUS_SUFFIX}`)).rejects.toThrow();
        await expect(access(join(stateDir, 'install-journal.json'))).rejects.toThrow();
        const history = (await redisClient.lrange(HISTORY_KEY, 0, -1)).map((e) => JSON.parse(e));
        expect(history[0]).toMatchObject({ version: '1.1.0', outcome: 'installed' });
      } finally {
        for (const child of children.splice(0)) child.kill('SIGKILL');
        await docker('rm', '-f', name, `${name}${PREVIOUS_SUFFIX}`).catch(() => undefined);
        await docker('volume', 'rm', `${name}-data`).catch(() => undefined);
      }
    },
    120_000,
  );
});
