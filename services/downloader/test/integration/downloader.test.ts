import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  type DownloadComplete,
  type DownloadProgress,
  Queues,
  StateKeys,
  Streams,
  Subjects,
  Topics,
} from '@aico-update/shared';
import { type SpawnedServer, spawnNats, spawnRedis } from '@aico-update/shared/testing';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RunningDownloader } from '../../src/main.ts';
import { releaseRef, runDownloadJob, startTestDownloader } from '../support/harness.ts';

const MIB = 1024 * 1024;
let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let t: TestRepository;
const running: RunningDownloader[] = [];
let progress: DownloadProgress[];
let completes: DownloadComplete[];

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  nc.subscribe(Subjects.event(Topics.downloadProgress), {
    callback: (_e, m) => void progress.push(m.json()),
  });
  nc.subscribe(Subjects.event(Topics.downloadComplete), {
    callback: (_e, m) => void completes.push(m.json()),
  });
});

afterAll(async () => {
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

beforeEach(async () => {
  progress = [];
  completes = [];
  await redisClient.flushall();
  await (await jetstreamManager(nc)).streams.delete(Streams.events).catch(() => undefined);
  t = await startTestRepository();
});

afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
  await t.close();
});

async function downloader(env: Record<string, string> = {}) {
  const d = await startTestDownloader(t, redis, nats, env);
  running.push(d);
  return d;
}

const blobRequests = () => t.faults.requests.filter((r) => r.path.startsWith('/targets/artifacts/'));
const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

async function installJobs() {
  const queue = new Queue(Queues.install, { connection: redisClient });
  const jobs = await queue.getJobs(['waiting', 'delayed', 'prioritized']);
  await queue.close();
  return jobs.map((j) => ({ id: j.id, reason: j.data.reason }));
}

describe('downloader', () => {
  it('downloads a release verified into the cache, reports progress from signed lengths, and waits for an install request', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable', size: 4 * MIB });
    await downloader({
      AICO_DOWNLOADER_PROGRESS_INTERVAL_MS: '50',
      AICO_DOWNLOADER_MAX_KIB_PER_SECOND: '8192',
    });
    const release = await releaseRef(t, 'backend', '1.1.0');
    const result = await runDownloadJob(redisClient, redis.url, { v: 1, release, reason: 'auto_download' });
    expect(result.state).toBe('completed');

    const cacheDir = join(t.workDir, 'cache');
    const expected = Buffer.alloc(4 * MIB, '1.1.0');
    expect(await readFile(join(cacheDir, 'blobs', sha(expected)))).toEqual(expected);
    expect(await readdir(join(cacheDir, 'partials'))).toEqual([]);
    expect(await redisClient.hexists(StateKeys.downloaded, 'backend@1.1.0')).toBe(1);

    await new Promise((r) => setTimeout(r, 200));
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(progress.every((p) => p.total_bytes === 4 * MIB)).toBe(true);
    expect(progress.at(-1)).toMatchObject({
      status: 'completed',
      percent: 100,
      bytes_done: 4 * MIB,
      eta_seconds: 0,
    });
    const middle = progress.find((p) => p.status === 'in_progress' && p.bytes_done > 0);
    expect(middle?.rate_bytes_per_second).toBeGreaterThan(0);
    expect(completes).toEqual([
      expect.objectContaining({ bytes_fetched: 4 * MIB, bytes_reused: 0, install: 'waits', release }),
    ]);
    expect(await installJobs()).toEqual([]);

    // A second job for the same release completes at once, fetching nothing.
    t.faults.resetRequests();
    const again = await runDownloadJob(
      redisClient,
      redis.url,
      { v: 1, release, reason: 'request' },
      { jobId: 'again' },
    );
    expect(again.job.returnvalue).toMatchObject({ outcome: 'already_present' });
    expect(blobRequests()).toEqual([]);
  });

  it('queues the install of a critical release (critical_install) and of any release with auto_install', async () => {
    await t.publish({ component: 'backend', version: '1.0.1', channel: 'stable', critical: true });
    await t.publish({ component: 'frontend', version: '2.0.0', channel: 'stable' });
    await downloader({ AICO_UPDATE_AUTO_INSTALL: 'false' });
    await runDownloadJob(redisClient, redis.url, {
      v: 1,
      release: await releaseRef(t, 'backend', '1.0.1'),
      reason: 'critical',
    });
    await runDownloadJob(redisClient, redis.url, {
      v: 1,
      release: await releaseRef(t, 'frontend', '2.0.0'),
      reason: 'auto_download',
    });
    expect(await installJobs()).toEqual([{ id: 'install-backend-1.0.1', reason: 'critical' }]);
    expect(completes.map((c) => c.install).sort()).toEqual(['critical', 'waits']);
  });

  it('refuses a job for a release the trusted metadata does not sign, fetching nothing', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    await downloader();
    const result = await runDownloadJob(
      redisClient,
      redis.url,
      { v: 1, release: { component: 'backend', version: '9.9.9' }, reason: 'request' },
      { attempts: 3 },
    );
    expect(result.state).toBe('failed');
    expect(result.job.attemptsMade).toBe(1);
    expect(result.job.failedReason).toContain('the trusted metadata signs no such release');
    expect(blobRequests()).toEqual([]);
  });

  it('a job is a pointer: what it claims about the release is ignored, the signed summary is used', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    await downloader();
    const release = await releaseRef(t, 'backend', '1.1.0');
    const claimed = { ...release, critical: true, target: { ...release.target, sha256: 'f'.repeat(64) } };
    const result = await runDownloadJob(redisClient, redis.url, {
      v: 1,
      release: claimed,
      reason: 'critical',
    });
    expect(result.state).toBe('completed');
    const record = JSON.parse((await redisClient.hget(StateKeys.downloaded, 'backend@1.1.0')) as string);
    expect(record.release).toEqual(release);
    // Not critical as signed, auto_install off: no install job was queued.
    expect(await installJobs()).toEqual([]);
    // The metadata it verified is mirrored into the cache, for the installer to verify again.
    const mirror = await readdir(join(t.workDir, 'cache', 'metadata'));
    expect(mirror).toEqual(
      expect.arrayContaining(['1.root.json', 'timestamp.json', 'snapshot.json', 'targets.json']),
    );
  });

  it('discards a corrupted byte and gets the file right on the retry: no corrupt blob ever in the cache', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable', size: MIB });
    const entry = (await t.repo.readTargets()).targets['artifacts/backend/1.1.0/backend-1.1.0.bin'];
    const path = `/targets/artifacts/backend/1.1.0/${entry?.hashes.sha256}.backend-1.1.0.bin`;
    t.faults.add(path, { kind: 'corrupt', offset: 1000 }, 1);
    const d = await downloader();
    const release = await releaseRef(t, 'backend', '1.1.0');
    const result = await runDownloadJob(
      redisClient,
      redis.url,
      { v: 1, release, reason: 'request' },
      { attempts: 2 },
    );
    expect(result.state).toBe('completed');
    expect(result.job.attemptsMade).toBe(2);
    const blob = await readFile(join(t.workDir, 'cache', 'blobs', entry?.hashes.sha256 as string));
    expect(sha(blob)).toBe(entry?.hashes.sha256);
    const metrics = await (await fetch(`http://127.0.0.1:${d.port}/metrics`)).text();
    expect(metrics).toMatch(/aico_update_downloads_total\{outcome="failed",service="downloader"\} 1/);
  });

  it('keeps blobs the installed or a pending release needs and collects the rest', async () => {
    for (const version of ['1.0.0', '1.1.0', '1.2.0'])
      await t.publish({ component: 'backend', version, channel: 'stable' });
    await downloader();
    for (const version of ['1.0.0', '1.1.0']) {
      await runDownloadJob(redisClient, redis.url, {
        v: 1,
        release: await releaseRef(t, 'backend', version),
        reason: 'request',
      });
    }
    await redisClient.hset(StateKeys.installed, 'backend', '1.1.0');
    await runDownloadJob(redisClient, redis.url, {
      v: 1,
      release: await releaseRef(t, 'backend', '1.2.0'),
      reason: 'request',
    });
    const cached = await readdir(join(t.workDir, 'cache', 'blobs'));
    expect(cached.sort()).toEqual([sha(Buffer.alloc(64, '1.1.0')), sha(Buffer.alloc(64, '1.2.0'))].sort());
  });
});
