import {
  type CheckResponse,
  checkRequestSchema,
  type Logger,
  type NatsConnection,
  Subjects,
  Topics,
} from '@aico-update/shared';
import type { Subscription } from '@nats-io/transport-node';
import type { CheckRequests } from '../handlers/check-requests.ts';
import type { CheckerMetrics } from '../metrics.ts';

export const CHECKER_QUEUE_GROUP = 'aico-update-checker';

/**
 * Serves `update.check.request` commands (request/reply on the internal command subject; one replica
 * answers each, through the queue group). A malformed request is answered with an error and counted.
 */
export function serveCheckRequests(
  nc: NatsConnection,
  requests: CheckRequests,
  metrics: CheckerMetrics,
  logger: Logger,
): Subscription {
  return nc.subscribe(Subjects.command(Topics.checkRequest), {
    queue: CHECKER_QUEUE_GROUP,
    callback: (err, msg) => {
      if (err) {
        logger.error({ err }, 'check request subscription failed');
        return;
      }
      void (async () => {
        let body: unknown;
        try {
          body = msg.data.length ? msg.json() : {};
        } catch {
          metrics.badRequests.inc({ reason: 'not_json' });
          msg.respond(
            JSON.stringify({ error: { code: 'BAD_REQUEST', message: 'check request is not JSON' } }),
          );
          return;
        }
        const parsed = checkRequestSchema.safeParse(body);
        if (!parsed.success) {
          metrics.badRequests.inc({ reason: 'invalid' });
          const message = `check request is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`;
          logger.warn({ issues: parsed.error.issues }, message);
          msg.respond(JSON.stringify({ error: { code: 'BAD_REQUEST', message } }));
          return;
        }
        let response: CheckResponse;
        try {
          response = await requests.handle(parsed.data);
        } catch (error) {
          logger.error({ err: error }, 'check request failed');
          msg.respond(JSON.stringify({ error: { code: 'CHECK_FAILED', message: (error as Error).message } }));
          return;
        }
        msg.respond(JSON.stringify(response));
      })();
    },
  });
}
