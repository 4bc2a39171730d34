import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeImageArchive } from '@aico-update/image-archive';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  type DownloadProgress,
  downloadJobId,
  Queues,
  releaseManifestSchema,
  Subjects,
  Topics,
} from '@aico-update/shared';
import {
  buildAppImage,
  docker,
  ensureBaseImage,
  importFolder,
  mountSmallDisk,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
  testTag,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { downloaderEnv, releaseRef, runDownloadJob, startTestDownloader } from '../support/harness.ts';

const MIB = 1024 * 1024;
const main = resolve(import.meta.dirname, '../../src/main.ts');
let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let t: TestRepository;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  [redis, nats] = await Promise.all([spawnRedis({ persistent: true }), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  t = await startTestRepository();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop(), t.close()]);
});

function progressUntil(predicate: (p: DownloadProgress) => boolean): Promise<DownloadProgress> {
  return new Promise<DownloadProgress>((resolveProgress) => {
    const sub = nc.subscribe(Subjects.event(Topics.downloadProgress), {
      callback: (_e, m) => {
        const p = m.json<DownloadProgress>();
        if (predicate(p)) {
          sub.unsubscribe();
          resolveProgress(p);
        }
      },
    });
  });
}

function spawnDownloader(env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, [main], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: 'ignore',
  });
  cleanups.push(async () => child.kill('SIGKILL'));
  return child;
}

/**
 * Queues the download of backend `version` (3 attempts), runs a downloader process capped at `kibPerSecond`
 * and SIGKILLs it once `killAtBytes` are done; returns what the restart needs.
 */
async function downloadKilledAt(version: string, kibPerSecond: number, killAtBytes: number) {
  const env = downloaderEnv(t, redis, nats, {
    AICO_DOWNLOADER_MAX_KIB_PER_SECOND: String(kibPerSecond),
    AICO_DOWNLOADER_LOCK_SECONDS: '2',
  });
  const release = await releaseRef(t, 'backend', version);
  const queue = new Queue(Queues.download, { connection: redisClient });
  cleanups.push(() => queue.close());
  await queue.add(
    'download',
    { v: 1, release, reason: 'auto_download' },
    { jobId: downloadJobId(release), attempts: 3 },
  );
  const first = spawnDownloader(env);
  await progressUntil((p) => p.bytes_done >= killAtBytes);
  first.kill('SIGKILL');
  await new Promise((r) => first.once('exit', r));
  return { env, release, queue, cache: env.AICO_DOWNLOADER_CACHE_DIR as string };
}

describe('downloader reliability', () => {
  it('SIGKILLed mid-download and restarted: resumes from the partial, never caches half a file', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable', size: 6 * MIB });
    const { env, release, queue, cache } = await downloadKilledAt('1.1.0', 2048, 2 * MIB);
    expect(await readdir(join(cache, 'blobs'))).toEqual([]);
    expect(await readdir(join(cache, 'partials'))).toHaveLength(1);

    const events = new QueueEvents(Queues.download, { connection: { url: redis.url } });
    cleanups.push(() => events.close());
    spawnDownloader({ ...env, AICO_DOWNLOADER_MAX_KIB_PER_SECOND: '0' });
    const job = await queue.getJob(downloadJobId(release));
    await job?.waitUntilFinished(events, 60_000);

    // The restarted downloader asked only for the rest: its Range starts where the partial ended, and
    // the server sent exactly the remainder. (Bytes the first request wrote into socket buffers that
    // the killed process never read are not counted: they never reached the disk.)
    const served = t.faults.requests.filter((r) => r.path.startsWith('/targets/artifacts/backend/1.1.0/'));
    const resumed = served.find((r) => r.range);
    const offset = Number(/^bytes=(\d+)-$/.exec(resumed?.range ?? '')?.[1]);
    expect(offset).toBeGreaterThanOrEqual(MIB);
    expect(resumed?.bytes).toBe(6 * MIB - offset);
    const blobs = await readdir(join(cache, 'blobs'));
    expect(blobs).toHaveLength(1);
    expect(await readFile(join(cache, 'blobs', blobs[0] as string))).toEqual(Buffer.alloc(6 * MIB, '1.1.0'));
  });

  it('SIGKILLed mid-rebuild of a chunked layer and restarted: resumes from its last checkpoint, only verified layers in blobs/', async () => {
    // A 24 MiB layer of random bytes, published chunked: the rebuild checkpoints every 16 MiB.
    const root = join(t.workDir, 'rootfs');
    await mkdir(root);
    await writeFile(join(root, 'weights.bin'), randomBytes(24 * MIB));
    const tag = testTag('aico-test/chunked-kill', '1.0.0');
    await importFolder(root, tag);
    cleanups.push(() => docker('rmi', '-f', tag));
    const archive = join(t.workDir, 'image.tar');
    await docker('save', '-o', archive, tag);
    const manifest = await t.repo.addRelease({
      component: 'backend',
      version: '1.0.0',
      channel: 'stable',
      artifacts: [],
      images: [{ service: 'backend', archive }],
      zstdLevel: 3,
    });
    const { env, release, queue, cache } = await downloadKilledAt('1.0.0', 4096, 19 * MIB);
    const layer = manifest.images[0]?.layers[0];
    expect(layer?.chunked).toBeDefined();
    expect(await readdir(join(cache, 'blobs'))).not.toContain(layer?.digest.slice(7));
    expect((await readdir(join(cache, 'partials'))).sort()).toEqual([
      `${layer?.digest.slice(7)}.layer`,
      `${layer?.digest.slice(7)}.layer.checkpoint`,
    ]);

    const events = new QueueEvents(Queues.download, { connection: { url: redis.url } });
    cleanups.push(() => events.close());
    t.faults.resetRequests();
    spawnDownloader({ ...env, AICO_DOWNLOADER_MAX_KIB_PER_SECOND: '0' });
    const job = await queue.getJob(downloadJobId(release));
    await job?.waitUntilFinished(events, 60_000);

    // The restarted downloader asked for the pack from its checkpoint on, not from the start.
    const packs = t.faults.requests.filter((r) => r.path.startsWith('/targets/packs/'));
    const from = Number(/^bytes=(\d+)-\d+$/.exec(packs[0]?.range ?? '')?.[1]);
    expect(from).toBeGreaterThanOrEqual(15 * MIB);
    expect(packs.reduce((n, r) => n + r.bytes, 0)).toBeLessThanOrEqual(
      (layer?.chunked?.pack.length ?? 0) - from,
    );
    const blob = await readFile(join(cache, 'blobs', layer?.digest.slice(7) as string));
    expect(`sha256:${createHash('sha256').update(blob).digest('hex')}`).toBe(layer?.digest);
    expect(await readdir(join(cache, 'partials'))).toEqual([]);
  });

  it('Redis restarted mid-job: the download finishes and is recorded', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable', size: 4 * MIB });
    const d = await startTestDownloader(t, redis, nats, { AICO_DOWNLOADER_MAX_KIB_PER_SECOND: '2048' });
    cleanups.push(() => d.stop());
    const release = await releaseRef(t, 'backend', '1.1.0');
    const completed = new Promise((r) =>
      nc.subscribe(Subjects.event(Topics.downloadComplete), { max: 1, callback: () => r(true) }),
    );
    const queue = new Queue(Queues.download, { connection: redisClient });
    cleanups.push(() => queue.close());
    await queue.add(
      'download',
      { v: 1, release, reason: 'auto_download' },
      { jobId: downloadJobId(release) },
    );
    await progressUntil((p) => p.bytes_done >= MIB);
    await redis.restart();
    await completed;
    const check = new Redis(redis.url, { maxRetriesPerRequest: null });
    cleanups.push(async () => check.disconnect());
    for (let i = 0; i < 50 && (await check.hexists('aico-update:downloaded', 'backend@1.1.0')) === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await check.hexists('aico-update:downloaded', 'backend@1.1.0')).toBe(1);
    const after = new Queue(Queues.download, { connection: check });
    cleanups.push(() => after.close());
    for (let i = 0; i < 50 && (await after.getJobState(downloadJobId(release))) !== 'completed'; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await after.getJobState(downloadJobId(release))).toBe('completed');
  });

  it('not enough disk: a clear error before any byte is fetched, and nothing left behind', async () => {
    const cache = join(t.workDir, 'small-disk');
    cleanups.push(await mountSmallDisk(cache, '2m'));
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable', size: 4 * MIB });
    const d = await startTestDownloader(t, redis, nats, { AICO_DOWNLOADER_CACHE_DIR: cache });
    cleanups.push(() => d.stop());
    const failed = progressUntil((p) => p.status === 'failed');
    const result = await runDownloadJob(redisClient, redis.url, {
      v: 1,
      release: await releaseRef(t, 'backend', '1.1.0'),
      reason: 'request',
    });
    expect(result.state).toBe('failed');
    expect(result.job.failedReason).toMatch(
      /not enough free disk for backend 1\.1\.0: it needs 4\.0 MiB .* has [\d.]+ MiB free.*Nothing was fetched/,
    );
    expect((await failed).message).toContain('not enough free disk');
    expect(t.faults.requests.filter((r) => r.path.startsWith('/targets/artifacts/'))).toEqual([]);
    expect(await readdir(join(cache, 'partials'))).toEqual([]);
    expect(await readdir(join(cache, 'blobs'))).toEqual([]);
  });

  it('an app-only image change moves only the app layer; the blobs assemble into the same image id', async () => {
    await ensureBaseImage('aico-test/base:delta', 8 * MIB);
    const archives: Record<string, string> = {};
    const ids: Record<string, string> = {};
    for (const version of ['1.0.0', '1.1.0']) {
      const tag = testTag('aico-test/backend', `delta-${version}`);
      ids[version] = await buildAppImage('aico-test/base:delta', tag, version, 256 * 1024);
      archives[version] = join(t.workDir, `backend-${version}.tar`);
      await docker('save', '-o', archives[version] as string, tag);
      cleanups.push(() => docker('rmi', '-f', tag));
      await t.repo.addRelease({
        component: 'backend',
        version,
        channel: 'stable',
        artifacts: [],
        images: [{ service: 'backend', archive: archives[version] as string }],
      });
    }
    const d = await startTestDownloader(t, redis, nats);
    cleanups.push(() => d.stop());
    const completes: { bytes_fetched: number; bytes_reused: number }[] = [];
    nc.subscribe(Subjects.event(Topics.downloadComplete), {
      callback: (_e, m) => void completes.push(m.json()),
    });
    for (const version of ['1.0.0', '1.1.0']) {
      const result = await runDownloadJob(redisClient, redis.url, {
        v: 1,
        release: await releaseRef(t, 'backend', version),
        reason: 'request',
      });
      expect(result.state).toBe('completed');
    }
    await new Promise((r) => setTimeout(r, 100));
    const [v1, v2] = completes;
    expect(v1?.bytes_reused).toBe(0);
    expect(v2!.bytes_fetched / (v2!.bytes_fetched + v2!.bytes_reused)).toBeLessThan(0.1);

    // Assemble 1.1.0 from the cache and load it: the same image id the publisher saved.
    const cache = join(t.workDir, 'cache');
    const manifest = releaseManifestSchema.parse(
      JSON.parse(await readFile(join(cache, 'manifests', 'backend@1.1.0.json'), 'utf8')),
    );
    const image = manifest.images[0]!;
    const blob = (b: { digest: string; length: number }) => ({
      ...b,
      file: join(cache, 'blobs', b.digest.slice(7)),
    });
    await docker('rmi', '-f', testTag('aico-test/backend', 'delta-1.1.0'));
    await writeImageArchive(
      {
        imageId: image.image_id,
        repoTags: image.repo_tags,
        config: blob(image.config),
        layers: image.layers.map(blob),
      },
      join(t.workDir, 'assembled.tar'),
    );
    await docker('load', '-i', join(t.workDir, 'assembled.tar'));
    // Published without tags (the installer tags what each deployment names): found by its id.
    expect(await docker('image', 'inspect', '--format', '{{.Id}}', ids['1.1.0'] as string)).toBe(
      ids['1.1.0'],
    );
  });
});
