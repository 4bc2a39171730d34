import {
  checkRequestSchema,
  type Logger,
  type NatsConnection,
  serveCommand,
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
  return serveCommand(nc, Topics.checkRequest, checkRequestSchema, (request) => requests.handle(request), {
    queue: CHECKER_QUEUE_GROUP,
    logger,
    onMalformed: (reason) => metrics.badRequests.inc({ reason }),
  });
}
