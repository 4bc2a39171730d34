import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ExtraTopics,
  ensureEventStream,
  type InstallJob,
  Queues,
  StateKeys,
  Subjects,
} from '@aico-update/shared';
import {
  buildSampleBackend,
  docker,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
  testTag,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../src/adapters/docker-runtime.ts';
import { requestInstall } from '../../src/handlers/commands.ts';
import { InstallFailed, installRelease } from '../../src/handlers/install-release.ts';
import { IntegrityWatch } from '../../src/handlers/integrity.ts';
import { SampleDeployment } from '../support/deployment.ts';
import { testInstallDeps } from '../support/deps.ts';
import {
  lastOutcome,
  markDownloaded,
  publisherFor,
  type StagedJob,
  stageRelease,
  syncCache,
} from '../support/stage.ts';

/*
 * The installer keeps its own trust: a compromised downloader (or anything that can write Redis or the
 * shared cache) cannot get an image loaded, tagged or started. Each attack separately, on the real
 * engine with releases from a real signed repository: refused with its own code, and the engine shows
 * that nothing was loaded, tagged, stopped or backed up.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let dir: string;
let cacheDir: string;
let deployment: SampleDeployment;
let deps: Awaited<ReturnType<typeof testInstallDeps>>;
const runtime = new DockerRuntime();
const imageIds: string[] = [];

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
  await ensureEventStream(nc);
  dir = await makeTempDir('installer-trust');
  cacheDir = join(dir, 'cache');
  deployment = await new SampleDeployment().start({ hostPort: 'none' });
  await redisClient.hset(StateKeys.installed, 'backend', '1.0.0');
  deps = await testInstallDeps(
    { runtime, redis: redisClient, nc },
    {
      cache_dir: cacheDir,
      state_dir: join(dir, 'state'),
      services: { backend: deployment.name },
      health_timeout_seconds: 15,
      soak_seconds: 1,
      backup: { dir: join(dir, 'backups'), paths: { backend: '/data' } },
      prepare_timeout_seconds: 0.3,
    },
  );
});

afterEach(async () => {
  await deployment.remove();
  await docker('rmi', '-f', ...imageIds.splice(0)).catch(() => undefined);
});

/** Publishes a sample backend `version` and stages it in the cache; returns the job and its image id. */
async function publish(
  version: string,
  options: { critical?: boolean; tamper?: Parameters<typeof stageRelease>[4] } = {},
): Promise<{ job: StagedJob; imageId: string }> {
  const tag = await deployment.image(version);
  const imageId = await docker('image', 'inspect', '--format', '{{.Id}}', tag);
  imageIds.push(imageId);
  const job = await stageRelease(
    cacheDir,
    'backend',
    version,
    [{ service: 'backend', tag }],
    options.tamper,
    {
      critical: options.critical ?? false,
    },
  );
  return { job, imageId };
}

/** What an attack must leave as it was: the container, the deployment's tag, the backups, the engine. */
async function engineState() {
  const container = await deployment.inspect();
  return {
    container: { id: container.Id, startedAt: container.State.StartedAt, image: container.Image },
    deploymentTag: await docker('image', 'inspect', '--format', '{{.Id}}', deployment.tag),
    backups: await readdir(join(dir, 'backups')).catch(() => [] as string[]),
  };
}

async function imageLoaded(id: string): Promise<boolean> {
  return docker('image', 'inspect', id).then(
    () => true,
    () => false,
  );
}

async function refusal(job: InstallJob): Promise<InstallFailed> {
  const error = await installRelease(deps, job).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof InstallFailed)) throw new Error(`expected a refusal, got ${String(error)}`);
  return error;
}

describe('a compromised downloader cannot get anything installed', () => {
  it('a forged manifest in the cache: MANIFEST_NOT_SIGNED, nothing loaded, tagged, stopped or backed up', async () => {
    const { job, imageId } = await publish('1.1.0');
    const file = join(cacheDir, 'manifests', 'backend@1.1.0.json');
    const manifest = JSON.parse(await readFile(file, 'utf8'));
    manifest.critical = true;
    manifest.images[0].repo_tags = ['aico-update/installer:local'];
    await writeFile(file, JSON.stringify(manifest));
    const before = await engineState();
    const error = await refusal(deps.seal.seal(job));
    expect(error).toMatchObject({ code: 'MANIFEST_NOT_SIGNED', rolledBack: false });
    expect(await engineState()).toEqual(before);
    expect(await imageLoaded(imageId)).toBe(false);
    expect(await lastOutcome(redisClient)).toMatchObject({
      version: '1.1.0',
      outcome: 'refused',
      code: 'MANIFEST_NOT_SIGNED',
    });
  });

  it('a blob swapped after it was verified: BLOB_NOT_VERIFIED while it streams, the engine loads nothing', async () => {
    const { job, imageId } = await publish('1.1.0');
    const manifest = JSON.parse(await readFile(join(cacheDir, 'manifests', 'backend@1.1.0.json'), 'utf8'));
    const layer = manifest.images[0].layers.at(-1);
    const blob = join(cacheDir, 'blobs', layer.digest.slice(7));
    const bytes = await readFile(blob);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] as number) ^ 0xff; // same length, other bytes
    await writeFile(blob, bytes);
    const before = await engineState();
    const error = await refusal(deps.seal.seal(job));
    expect(error).toMatchObject({ code: 'BLOB_NOT_VERIFIED', rolledBack: false });
    expect(error.message).toContain(layer.digest);
    expect(await engineState()).toEqual(before);
    expect(await imageLoaded(imageId)).toBe(false);
  });

  it('a forged job with critical: true for an older signed release: NOT_AUTHORIZED (the signed release is not critical)', async () => {
    await publish('0.9.0');
    const { job } = await publish('1.1.0');
    expect(await installRelease(deps, deps.seal.seal(job))).toMatchObject({ outcome: 'installed' });
    const before = await engineState();
    // What a compromised downloader can put in the queue: any claim, no seal.
    const forged = {
      v: 1,
      release: { component: 'backend', version: '0.9.0', critical: true, channel: 'stable' },
      reason: 'critical',
      allow_downgrade: true,
    } as unknown as InstallJob;
    const error = await refusal(forged);
    expect(error).toMatchObject({ code: 'NOT_AUTHORIZED' });
    expect(await engineState()).toEqual(before);
    // Claiming an operator's request without the installer's seal changes nothing.
    const claimed = {
      ...forged,
      reason: 'request',
      issued_at: new Date().toISOString(),
      mac: 'a'.repeat(64),
    };
    expect(await refusal(claimed as InstallJob)).toMatchObject({ code: 'NOT_AUTHORIZED' });
    // Even an operator's own (sealed) request is a downgrade the installer refuses unless asked for.
    expect(
      await refusal(
        deps.seal.seal({ v: 1, release: { component: 'backend', version: '0.9.0' }, reason: 'request' }),
      ),
    ).toMatchObject({
      code: 'DOWNGRADE_REFUSED',
    });
    expect(await engineState()).toEqual(before);
    expect(await redisClient.hget(StateKeys.installed, 'backend')).toBe('1.1.0');
  });

  it('forged downloaded records: the install command verifies each itself, refuses, and queues nothing', async () => {
    const { job } = await publish('1.1.0');
    await markDownloaded(redisClient, job);
    // A record for a release that is not signed, claiming to be newest and critical.
    await redisClient.hset(
      StateKeys.downloaded,
      'backend@9.9.9',
      JSON.stringify({
        manifest_sha256: job.ref.target.sha256,
        completed_at: 'now',
        release: { ...job.ref, version: '9.9.9', critical: true },
      }),
    );
    const queue = new Queue(Queues.install, { connection: redisClient });
    try {
      const before = await engineState();
      const reply = await requestInstall(
        { queue, install: deps },
        { v: 1, component: 'backend', auto_restart: true, allow_downgrade: false },
      );
      expect(reply).toMatchObject({ accepted: false, code: 'RELEASE_WITHDRAWN' });
      expect(await queue.getJobCounts()).toMatchObject({ waiting: 0, delayed: 0, active: 0 });
      expect(await engineState()).toEqual(before);
      // The genuine one, named, is accepted and queued sealed.
      const accepted = await requestInstall(
        { queue, install: deps },
        { v: 1, component: 'backend', version: '1.1.0', auto_restart: true, allow_downgrade: false },
      );
      expect(accepted).toMatchObject({ accepted: true });
      const queued = await queue.getJob(accepted.job_id as string);
      expect(deps.seal.verify(queued?.data)).toBe(true);
      expect(queued?.data).not.toHaveProperty('release.critical');
    } finally {
      await queue.obliterate({ force: true });
      await queue.close();
    }
  });

  it("a signed manifest whose repo_tags name the installer's own image: RELEASE_TAGS_REFUSED before anything is loaded", async () => {
    const installerTag = testTag('aico-update/installer', 'local');
    await buildSampleBackend(installerTag, 'installer');
    const installerImage = await docker('image', 'inspect', '--format', '{{.Id}}', installerTag);
    imageIds.push(installerImage);
    const { job, imageId } = await publish('1.1.0', {
      tamper: (image) => ({ ...image, repo_tags: [installerTag] }),
    });
    const before = await engineState();
    const error = await refusal(deps.seal.seal(job));
    expect(error).toMatchObject({ code: 'RELEASE_TAGS_REFUSED' });
    expect(error.message).toContain(installerTag);
    expect(await engineState()).toEqual(before);
    expect(await imageLoaded(imageId)).toBe(false);
    expect(await docker('image', 'inspect', '--format', '{{.Id}}', installerTag)).toBe(installerImage);
  });

  it('a withdrawn release, still in the cache: RELEASE_WITHDRAWN', async () => {
    const { job, imageId } = await publish('1.1.0');
    const publisher = await publisherFor(cacheDir);
    await publisher.withdraw('backend', '1.1.0');
    await syncCache(publisher, cacheDir);
    const before = await engineState();
    const error = await refusal(deps.seal.seal(job));
    expect(error).toMatchObject({ code: 'RELEASE_WITHDRAWN' });
    expect(await engineState()).toEqual(before);
    expect(await imageLoaded(imageId)).toBe(false);
  });

  it('a mirror rolled back to older metadata: the installer keeps its own newer trust and refuses', async () => {
    const publisher = await publisherFor(cacheDir);
    const old = await readFile(join(publisher.metadataDir, 'timestamp.json'));
    const { job } = await publish('1.1.0');
    expect(await installRelease(deps, deps.seal.seal(job))).toMatchObject({ outcome: 'installed' });
    const { job: next } = await publish('1.2.0');
    await writeFile(join(cacheDir, 'metadata', 'timestamp.json'), old);
    const error = await refusal(deps.seal.seal(next));
    expect(error).toMatchObject({ code: 'TUF_ROLLBACK' });
  });
});

describe('integrity after installation', () => {
  it('a container re-created from another image is reported as drift, and left alone', async () => {
    const { job, imageId } = await publish('1.1.0');
    expect(await installRelease(deps, deps.seal.seal(job))).toMatchObject({ outcome: 'installed' });
    const drifts: unknown[] = [];
    const sub = nc.subscribe(Subjects.event(ExtraTopics.integrityDrift), {
      callback: (_e, m) => void drifts.push(m.json()),
    });
    const watch = new IntegrityWatch(deps);
    expect(await watch.check()).toEqual([]);
    // Someone re-creates the backend from another image behind the update system's back.
    const other = await deployment.image('6.6.6');
    const otherId = await docker('image', 'inspect', '--format', '{{.Id}}', other);
    await docker('rm', '-f', deployment.name);
    await docker('run', '-d', '--name', deployment.name, '--network', deployment.network, other);
    const drift = await watch.check();
    expect(drift).toEqual([
      expect.objectContaining({ service: 'backend', expected: imageId, actual: otherId, version: '1.1.0' }),
    ]);
    expect(await deps.registry.metrics()).toMatch(
      /aico_update_image_drift\{target_service="backend",service="installer-test"\} 1/,
    );
    await nc.flush();
    await new Promise((r) => setTimeout(r, 200));
    expect(drifts).toEqual([expect.objectContaining({ container: deployment.name, actual: otherId })]);
    // Reported once, not at every check; the container is not touched.
    await watch.check();
    await nc.flush();
    expect(drifts).toHaveLength(1);
    expect((await deployment.inspect()).Image).toBe(otherId);
    sub.unsubscribe();
  });
});
