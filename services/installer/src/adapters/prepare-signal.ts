import { setTimeout as sleep } from 'node:timers/promises';
import {
  ExtraTopics,
  isNoResponders,
  type Logger,
  type PrepareAnswer,
  type PrepareRequest,
  parseJsonOrUndefined,
  prepareAnswerSchema,
  Subjects,
} from '@aico-update/shared';
import type { NatsConnection } from '@nats-io/nats-core';

/*
 * The prepare signal: before containers are swapped, every component listening on
 * `update.install.prepare` (AICO's PrepareForUpdateRequest, through the bus gateway) may answer "ready"
 * or ask for a delay (a conversation in flight, a long task). Delays are honoured, asking again after
 * each one, up to a bound; then the install goes ahead regardless: an update must not be blocked forever.
 */

export interface PrepareOutcome {
  /** Answers received in the last round (0: nobody listens, the install goes ahead at once). */
  answers: number;
  waitedMs: number;
  /** The bound was reached while a component still asked to wait. */
  forced: boolean;
  blocking: string[];
}

export type PrepareSignal = (request: PrepareRequest) => Promise<PrepareOutcome>;

export function natsPrepareSignal(
  nc: NatsConnection,
  options: { timeoutMs: number; maxDelayMs: number; logger: Logger },
): PrepareSignal {
  return async (request) => {
    const started = Date.now();
    const deadline = started + options.maxDelayMs;
    for (;;) {
      const answers = await ask(nc, request, options.timeoutMs, options.logger);
      const waiting = answers.filter((a) => !a.ready || a.suggested_delay_seconds > 0);
      const blocking = waiting.flatMap((a) =>
        a.blocking_operations.length > 0 ? a.blocking_operations : [a.message || (a.source ?? 'a component')],
      );
      if (waiting.length === 0) {
        return { answers: answers.length, waitedMs: Date.now() - started, forced: false, blocking: [] };
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        options.logger.warn(
          { blocking },
          `components still ask to wait after ${Math.round(options.maxDelayMs / 1000)} s (installer.prepare_max_delay_seconds); going ahead`,
        );
        return { answers: answers.length, waitedMs: Date.now() - started, forced: true, blocking };
      }
      const askedMs = Math.max(1000, ...waiting.map((a) => a.suggested_delay_seconds * 1000));
      options.logger.info(
        { blocking, delay_ms: Math.min(askedMs, remaining) },
        'install delayed by a component',
      );
      await sleep(Math.min(askedMs, remaining));
    }
  };
}

async function ask(
  nc: NatsConnection,
  request: PrepareRequest,
  timeoutMs: number,
  logger: Logger,
): Promise<PrepareAnswer[]> {
  const answers: PrepareAnswer[] = [];
  try {
    const replies = await nc.requestMany(
      Subjects.command(ExtraTopics.installPrepare),
      JSON.stringify(request),
      { strategy: 'timer', maxWait: timeoutMs },
    );
    for await (const reply of replies) {
      const parsed = prepareAnswerSchema.safeParse(parseJsonOrUndefined(reply.string()));
      if (parsed.success) answers.push(parsed.data);
      else logger.warn({ error: parsed.error.message }, 'ignored a malformed prepare answer');
    }
  } catch (error) {
    // No responders: nobody asked to be told; the install goes ahead.
    if (!isNoResponders(error)) throw error;
  }
  return answers;
}
