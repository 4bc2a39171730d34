import { join } from 'node:path';
import type { TestRepository } from '@aico-update/release/testing';
import {
  type DownloadJob,
  downloadJobId,
  loadConfig,
  Queues,
  type ReleaseRef,
  releaseCustomSchema,
  releaseTargetPath,
} from '@aico-update/shared';
import type { SpawnedServer } from '@aico-update/shared/testing';
import { type Job, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { downloaderConfigSchema } from '../../src/config.ts';
import { type RunningDownloader, startDownloader } from '../../src/main.ts';

let counter = 0;

export function downloaderEnv(
  t: TestRepository,
  redis: SpawnedServer,
  nats: SpawnedServer,
  env: Record<string, string> = {},
) {
  counter += 1;
  return {
    AICO_UPDATE_SERVER_METADATA_URL: t.metadataUrl,
    AICO_UPDATE_SERVER_CA_FILE: t.caFile,
    AICO_UPDATE_SERVER_IDLE_TIMEOUT_SECONDS: '2',
    AICO_UPDATE_SERVER_RETRIES: '2',
    AICO_TUF_STATE_DIR: join(t.workDir, `downloader-${counter}`),
    AICO_TUF_TRUSTED_ROOT: t.repo.trustedRootPath,
    AICO_DOWNLOADER_CACHE_DIR: join(t.workDir, 'cache'),
    AICO_DOWNLOADER_FREE_SPACE_HEADROOM_MIB: '0',
    AICO_DOWNLOADER_LOCK_SECONDS: '3',
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_HOST: '127.0.0.1',
    AICO_HTTP_PORT: '0',
    ...env,
  };
}

export function startTestDownloader(
  t: TestRepository,
  redis: SpawnedServer,
  nats: SpawnedServer,
  env: Record<string, string> = {},
): Promise<RunningDownloader> {
  const config = loadConfig(downloaderConfigSchema, { env: downloaderEnv(t, redis, nats, env) });
  return startDownloader(config, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }) });
}

/** The release as the checker would put it in a download job, read from the repository's signed targets. */
export async function releaseRef(t: TestRepository, component: string, version: string): Promise<ReleaseRef> {
  const path = releaseTargetPath(component, version);
  const entry = (await t.repo.readTargets()).targets[path];
  if (!entry) throw new Error(`no release ${component} ${version} in the test repository`);
  const custom = releaseCustomSchema.parse(entry.custom?.aico);
  return { ...custom, target: { path, length: entry.length, sha256: entry.hashes.sha256 as string } };
}

/** Enqueues a download job the way the checker does, with fast retries, and waits for its end. */
export async function runDownloadJob(
  redis: Redis,
  redisUrl: string,
  job: DownloadJob,
  options: { jobId?: string; attempts?: number } = {},
): Promise<{ state: 'completed' | 'failed'; job: Job; error?: string }> {
  const queue = new Queue(Queues.download, { connection: redis });
  const events = new QueueEvents(Queues.download, { connection: { url: redisUrl } });
  await events.waitUntilReady();
  try {
    const added = await queue.add('download', job, {
      jobId: options.jobId ?? downloadJobId(job.release),
      attempts: options.attempts ?? 1,
      backoff: { type: 'fixed', delay: 100 },
    });
    try {
      await added.waitUntilFinished(events, 60_000);
      return { state: 'completed', job: (await queue.getJob(added.id as string)) as Job };
    } catch (error) {
      return {
        state: 'failed',
        job: (await queue.getJob(added.id as string)) as Job,
        error: (error as Error).message,
      };
    }
  } finally {
    await events.close();
    await queue.close();
  }
}
