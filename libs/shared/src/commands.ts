import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Queue } from 'bullmq';
import type { z } from 'zod';
import { AppError } from './errors.ts';
import type { Logger } from './logger.ts';
import {
  type CommandReply,
  type DownloadJob,
  downloadJobId,
  type InstallJob,
  installJobId,
} from './messages.ts';
import { Subjects, type Topic } from './topics.ts';

/*
 * Internal commands are NATS request/reply on `aicoupd.cmd.<topic>`, JSON both ways. A request that is
 * not JSON or not valid is answered `{error: {code: 'BAD_REQUEST', message}}` and counted; a handler
 * failure is answered with its code. One replica answers each request (queue group).
 */

export interface CommandError {
  error: { code: string; message: string };
}

export function serveCommand<S extends z.ZodType>(
  nc: NatsConnection,
  topic: Topic,
  schema: S,
  handle: (request: z.output<S>) => Promise<unknown>,
  options: { queue: string; logger: Logger; onMalformed?: (reason: 'not_json' | 'invalid') => void },
): Subscription {
  const { logger } = options;
  const reply = (msg: { respond: (data: string) => boolean }, body: unknown) =>
    msg.respond(JSON.stringify(body));
  return nc.subscribe(Subjects.command(topic), {
    queue: options.queue,
    callback: (err, msg) => {
      if (err) {
        logger.error({ err }, `${topic} subscription failed`);
        return;
      }
      void (async () => {
        let body: unknown;
        try {
          body = msg.data.length ? msg.json() : {};
        } catch {
          options.onMalformed?.('not_json');
          reply(msg, badRequest(`${topic} is not JSON`));
          return;
        }
        const parsed = schema.safeParse(body);
        if (!parsed.success) {
          options.onMalformed?.('invalid');
          const message = `${topic} is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`;
          logger.warn({ issues: parsed.error.issues }, message);
          reply(msg, badRequest(message));
          return;
        }
        try {
          reply(msg, await handle(parsed.data));
        } catch (error) {
          const code = error instanceof AppError ? error.code : 'COMMAND_FAILED';
          logger.error({ err: error }, `${topic} failed`);
          reply(msg, { error: { code, message: (error as Error).message } } satisfies CommandError);
        }
      })();
    },
  });
}

function badRequest(message: string): CommandError {
  return { error: { code: 'BAD_REQUEST', message } };
}

/**
 * Queues an install job, one per release (idempotent by job id). `retry` replaces a finished job of the
 * same release: an operator may retry a release that failed, automation may not. `replace` also
 * replaces one still waiting (an operator's new schedule); `delayMs` holds it back until then.
 */
export async function enqueueInstall(
  queue: Queue,
  job: InstallJob,
  options: { retry?: boolean; replace?: boolean; delayMs?: number } = {},
): Promise<string> {
  const jobId = installJobId(job.release);
  if (options.retry || options.replace) {
    const existing = await queue.getJob(jobId);
    const state = await existing?.getState();
    const finished = state === 'completed' || state === 'failed';
    const waiting = state === 'delayed' || state === 'waiting' || state === 'prioritized';
    if (existing && (finished || (options.replace && waiting))) await existing.remove();
  }
  await queue.add('install', job, {
    jobId,
    ...(options.delayMs && options.delayMs > 0 ? { delay: Math.round(options.delayMs) } : {}),
    attempts: 3,
    backoff: { type: 'exponential', delay: 60_000 },
    removeOnComplete: { age: 30 * 24 * 3600 },
    removeOnFail: { age: 30 * 24 * 3600 },
  });
  return jobId;
}

/**
 * Queues a download job, one per release (idempotent by job id), five attempts with backoff. `retry`
 * replaces a finished one of the same release (a download that failed for good, retried on request);
 * `replaced` says how that one had ended.
 */
export async function enqueueDownload(
  queue: Queue,
  job: DownloadJob,
  options: { retry?: boolean; backoffMs?: number } = {},
): Promise<{ jobId: string; replaced?: 'completed' | 'failed' }> {
  const jobId = downloadJobId(job.release);
  let replaced: 'completed' | 'failed' | undefined;
  if (options.retry) {
    const existing = await queue.getJob(jobId);
    const state = await existing?.getState();
    if (existing && (state === 'completed' || state === 'failed')) {
      await existing.remove();
      replaced = state;
    }
  }
  await queue.add('download', job, {
    jobId,
    attempts: 5,
    backoff: { type: 'exponential', delay: options.backoffMs ?? 30_000 },
    removeOnComplete: { age: 7 * 24 * 3600 },
    removeOnFail: { age: 30 * 24 * 3600 },
  });
  return { jobId, ...(replaced ? { replaced } : {}) };
}

/** Sends an internal command and returns its answer; an `{error}` answer or no responder is an AppError. */
export async function sendCommand<T>(
  nc: NatsConnection,
  topic: Topic,
  body: unknown,
  timeoutMs: number,
): Promise<T> {
  let reply: { json: <U>() => U };
  try {
    reply = await nc.request(Subjects.command(topic), JSON.stringify(body), { timeout: timeoutMs });
  } catch (error) {
    const code = isNoResponders(error) ? 'NO_RESPONDER' : 'COMMAND_TIMEOUT';
    throw new AppError(
      code,
      code === 'NO_RESPONDER'
        ? `nothing serves ${topic} (is the service that owns it running?)`
        : `${topic} got no answer within ${timeoutMs} ms`,
      { cause: error },
    );
  }
  const answer = reply.json<T | CommandError>();
  if (answer && typeof answer === 'object' && 'error' in answer) {
    const { code, message } = (answer as CommandError).error;
    throw new AppError(code, message);
  }
  return answer as T;
}

/** NATS answered a request with "no responders" (status 503): nothing subscribes to the subject. */
export function isNoResponders(error: unknown): boolean {
  return /no responders|503/i.test(String((error as Error)?.message));
}

/**
 * The answers of a command to one request: its request id echoed, accepted with a message, or refused
 * with a code and a message a person can act on.
 */
export function replies(request: { request_id?: string | undefined }) {
  const ids = request.request_id ? { request_id: request.request_id } : {};
  return {
    ids,
    accept: (message: string, extra: Partial<CommandReply> = {}): CommandReply => ({
      v: 1,
      ...ids,
      accepted: true,
      message,
      ...extra,
    }),
    refuse: (code: string, message: string) => ({
      v: 1 as const,
      ...ids,
      accepted: false as const,
      code,
      message,
    }),
  };
}
