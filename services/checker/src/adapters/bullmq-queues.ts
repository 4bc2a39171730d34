import {
  type CheckJob,
  type CheckResponse,
  checkJobSchema,
  type DownloadJob,
  enqueueDownload,
  Queues,
} from '@aico-update/shared';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { DownloadQueue } from '../domain/ports.ts';

export const SCHEDULER_ID = 'periodic-update-check';

/** Download jobs for the downloader: one per release (job id), kept a while for status pages. */
export class BullDownloadQueue implements DownloadQueue {
  readonly queue: Queue;

  constructor(connection: Redis) {
    this.queue = new Queue(Queues.download, { connection });
  }

  async enqueue(job: DownloadJob): Promise<void> {
    await enqueueDownload(this.queue, job);
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}

/**
 * The check queue: a job scheduler fires a check every interval (one schedule in Redis, however many
 * checker replicas upsert it), and one worker per replica runs them one at a time.
 */
export class CheckQueue {
  readonly queue: Queue;
  worker: Worker | undefined;

  constructor(connection: Redis) {
    this.queue = new Queue(Queues.check, { connection });
  }

  async schedule(intervalHours: number): Promise<void> {
    await this.queue.upsertJobScheduler(
      SCHEDULER_ID,
      { every: Math.round(intervalHours * 3600 * 1000) },
      {
        name: 'check',
        data: { v: 1, reason: 'schedule', forced: false } satisfies CheckJob,
        opts: { removeOnComplete: 100, removeOnFail: 100 },
      },
    );
  }

  /** Scheduled checks off (update.auto_check false): only requested checks run. */
  async unschedule(): Promise<void> {
    await this.queue.removeJobScheduler(SCHEDULER_ID);
  }

  /** The schedule the settings ask for: every check_interval hours, or none when auto_check is off. */
  async follow(policy: { auto_check: boolean; check_interval: number }): Promise<void> {
    if (policy.auto_check) await this.schedule(policy.check_interval);
    else await this.unschedule();
  }

  /** A check right after start, shared by replicas that start together (same job id while it waits). */
  async checkSoon(): Promise<void> {
    await this.queue.add('check', { v: 1, reason: 'startup', forced: false } satisfies CheckJob, {
      jobId: 'startup-check',
      removeOnComplete: true,
      removeOnFail: true,
    });
  }

  start(connection: Redis, run: (job: CheckJob) => Promise<CheckResponse>): void {
    this.worker = new Worker(
      Queues.check,
      async (job) => {
        const parsed = checkJobSchema.safeParse(job.data);
        if (!parsed.success)
          throw new UnrecoverableError(`malformed check job ${job.id}: ${parsed.error.message}`);
        return run(parsed.data);
      },
      { connection, concurrency: 1 },
    );
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.queue.close();
  }
}
