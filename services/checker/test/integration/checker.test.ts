import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  type CheckResponse,
  lastEvent,
  Queues,
  StateKeys,
  Streams,
  Subjects,
  Topics,
  type UpdateAvailable,
} from '@aico-update/shared';
import { type SpawnedServer, spawnNats, spawnRedis } from '@aico-update/shared/testing';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RunningChecker } from '../../src/main.ts';
import { startTestChecker } from '../support/harness.ts';

let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let t: TestRepository;
const running: RunningChecker[] = [];

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
});

afterAll(async () => {
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

beforeEach(async () => {
  await redisClient.flushall();
  const jsm = await jetstreamManager(nc);
  await jsm.streams.delete(Streams.events).catch(() => undefined);
  t = await startTestRepository();
  await t.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
});

afterEach(async () => {
  for (const checker of running.splice(0)) await checker.stop();
  await t.close();
});

async function checker(env: Record<string, string> = {}, schedule = false): Promise<RunningChecker> {
  const started = await startTestChecker(t, redis, nats, env, schedule);
  running.push(started);
  return started;
}

async function eventCount(topic: (typeof Topics)[keyof typeof Topics]): Promise<number> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(Streams.events, { subjects_filter: Subjects.event(topic) });
  return info.state.subjects?.[Subjects.event(topic)] ?? 0;
}

async function downloadJobs() {
  const queue = new Queue(Queues.download, { connection: redisClient });
  const jobs = await queue.getJobs(['waiting', 'delayed', 'prioritized', 'active']);
  await queue.close();
  return jobs.map((job) => ({ id: job.id, reason: job.data.reason, version: job.data.release.version }));
}

describe('checker', () => {
  it('finds a newly published release, announces it durably once, and queues its download once', async () => {
    const c = await checker();
    expect((await c.checkNow()).outcome).toBe('up_to_date');

    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable', notes: 'Better recall' });
    const found = await c.checkNow();
    expect(found.outcome).toBe('update_available');
    expect(found.components).toEqual([
      {
        component: 'backend',
        installed: '1.0.0',
        update: expect.objectContaining({
          version: '1.1.0',
          notes: 'Better recall',
          critical: false,
          size_bytes: 64,
        }),
      },
    ]);

    // A subscriber that connects only now still sees the announcement.
    const late = await connect({ servers: nats.url });
    const available = await lastEvent<UpdateAvailable>(late, Topics.available);
    await late.close();
    expect(available).toMatchObject({
      v: 1,
      installed: '1.0.0',
      release: { component: 'backend', version: '1.1.0' },
    });

    await c.checkNow();
    expect(await eventCount(Topics.available)).toBe(1);
    expect(await eventCount(Topics.checkResponse)).toBe(3);
    expect(await downloadJobs()).toEqual([
      { id: 'download-backend-1.1.0', reason: 'auto_download', version: '1.1.0' },
    ]);
  });

  it('sees only its channel: stable sees stable, beta sees beta and stable', async () => {
    await t.publish({ component: 'backend', version: '1.0.1', channel: 'stable' });
    await t.publish({ component: 'backend', version: '1.1.0-beta.1', channel: 'beta' });
    await t.publish({ component: 'backend', version: '1.2.0-dev.1', channel: 'dev' });
    const stable = await checker({ AICO_UPDATE_CHANNEL: 'stable' });
    expect((await stable.checkNow()).components[0]?.update?.version).toBe('1.0.1');
    const beta = await checker({ AICO_UPDATE_CHANNEL: 'beta' });
    expect((await beta.checkNow()).components[0]?.update?.version).toBe('1.1.0-beta.1');
  });

  it('queues a critical release under critical_install when auto_download is off, and nothing else', async () => {
    await t.publish({ component: 'backend', version: '1.0.1', channel: 'stable', critical: true });
    const c = await checker({ AICO_UPDATE_AUTO_DOWNLOAD: 'false' });
    const response = await c.checkNow();
    expect(response.components[0]?.update).toMatchObject({ version: '1.0.1', critical: true });
    expect(await downloadJobs()).toEqual([
      { id: 'download-backend-1.0.1', reason: 'critical', version: '1.0.1' },
    ]);

    await redisClient.flushall();
    const noCritical = await checker({
      AICO_UPDATE_AUTO_DOWNLOAD: 'false',
      AICO_UPDATE_CRITICAL_INSTALL: 'false',
    });
    expect((await noCritical.checkNow()).outcome).toBe('update_available');
    expect(await downloadJobs()).toEqual([]);
  });

  it('answers update.check.request over NATS: forced runs now, others may be served from the last check', async () => {
    await checker();
    const ask = async (body: unknown) =>
      (
        await nc.request(
          Subjects.command(Topics.checkRequest),
          typeof body === 'string' ? body : JSON.stringify(body),
          { timeout: 10_000 },
        )
      ).json<CheckResponse & { error?: { code: string; message: string } }>();

    const forced = await ask({ request_id: 'r1', forced: true });
    expect(forced).toMatchObject({ request_id: 'r1', outcome: 'up_to_date', forced: true, cached: false });
    const normal = await ask({ request_id: 'r2' });
    expect(normal).toMatchObject({ request_id: 'r2', check_id: forced.check_id, cached: true });

    expect(await ask('{not json')).toEqual({
      error: { code: 'BAD_REQUEST', message: 'update.check.request is not JSON' },
    });
    const invalid = await ask({ forced: 'yes' });
    expect(invalid.error?.code).toBe('BAD_REQUEST');
    expect(invalid.error?.message).toContain('forced');
    // The gateway keeps working after bad input.
    expect((await ask({ forced: true })).outcome).toBe('up_to_date');
  });

  it('reports an unreachable or stalling server as a classified failure, and recovers when it is back', async () => {
    const c = await checker();
    t.faults.add(/^\/metadata\//, { kind: 'status', status: 503 });
    const down = await c.checkNow();
    expect(down).toMatchObject({
      outcome: 'failed',
      error: { kind: 'unreachable', code: 'TUF_SERVER_ERROR' },
    });
    t.faults.clear();

    t.faults.add('/metadata/timestamp.json', { kind: 'stall', afterBytes: 5 });
    const stalled = await c.checkNow();
    expect(stalled).toMatchObject({
      outcome: 'failed',
      error: { kind: 'unreachable', code: 'TUF_SLOW_RETRIEVAL' },
    });
    t.faults.clear();

    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    expect((await c.checkNow()).outcome).toBe('update_available');
    const metrics = await (await fetch(`http://127.0.0.1:${c.port}/metrics`)).text();
    expect(metrics).toContain(
      'aico_update_check_failures_total{kind="unreachable",code="TUF_SERVER_ERROR",service="checker"} 1',
    );
    expect(metrics).toContain(
      'aico_update_check_failures_total{kind="unreachable",code="TUF_SLOW_RETRIEVAL",service="checker"} 1',
    );
    expect(metrics).toMatch(
      /aico_update_last_successful_check_timestamp_seconds\{service="checker"\} \d{10}/,
    );
  });

  it('reports an attack as an attack, announces nothing and queues nothing', async () => {
    const c = await checker();
    await c.checkNow();
    const { readFile } = await import('node:fs/promises');
    const oldTimestamp = await readFile(`${t.repo.metadataDir}/timestamp.json`);
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    await c.checkNow();
    await redisClient.del('aico-update:announced');
    await t.publish({ component: 'backend', version: '1.2.0', channel: 'stable' });
    t.faults.add('/metadata/timestamp.json', { kind: 'replace', body: oldTimestamp });
    const response = await c.checkNow();
    expect(response).toMatchObject({ outcome: 'failed', error: { kind: 'attack', code: 'TUF_ROLLBACK' } });
    expect(await eventCount(Topics.available)).toBe(1);
    expect(await downloadJobs()).toEqual([
      { id: 'download-backend-1.1.0', reason: 'auto_download', version: '1.1.0' },
    ]);
  });

  it('runs on its schedule and on start, with one schedule however many replicas run', async () => {
    const reasons: string[] = [];
    const subscription = nc.subscribe(Subjects.event(Topics.checkResponse), {
      callback: (_err, msg) => {
        reasons.push(msg.json<CheckResponse>().reason);
      },
    });
    // 0.0005 h = 1.8 s between scheduled checks.
    await checker({ AICO_UPDATE_CHECK_INTERVAL: '0.0005' }, true);
    await checker({ AICO_UPDATE_CHECK_INTERVAL: '0.0005' }, true);
    const queue = new Queue(Queues.check, { connection: redisClient });
    expect(await queue.getJobSchedulersCount()).toBe(1);
    await queue.close();
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && reasons.filter((r) => r === 'schedule').length < 2) {
      await new Promise((r) => setTimeout(r, 100));
    }
    subscription.unsubscribe();
    expect(reasons).toContain('startup');
    expect(reasons.filter((r) => r === 'schedule').length).toBeGreaterThanOrEqual(2);
  });

  it('serves /healthz, /readyz, /metrics and /status, and never overwrites an installed version with its seed', async () => {
    await redisClient.hset(StateKeys.installed, 'backend', '1.0.5');
    const c = await checker({ AICO_INSTALLED: 'backend=1.0.0,frontend=2.0.0' });
    await c.checkNow();
    const base = `http://127.0.0.1:${c.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({
      status: 'ready',
      checks: [
        { name: 'redis', ok: true },
        { name: 'nats', ok: true },
      ],
    });
    const status = await (await fetch(`${base}/status`)).json();
    expect(status).toMatchObject({
      installed: { backend: '1.0.5', frontend: '2.0.0' },
      last_check: { outcome: 'up_to_date' },
      trusted_metadata: { versions: { root: 1 } },
    });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('# TYPE aico_update_checks_total counter');
    for (const role of ['root', 'timestamp', 'snapshot', 'targets']) {
      expect(metrics).toMatch(
        new RegExp(
          `aico_update_tuf_metadata_expiry_timestamp_seconds\\{role="${role}",service="checker"\\} \\d+`,
        ),
      );
    }
  });
});
