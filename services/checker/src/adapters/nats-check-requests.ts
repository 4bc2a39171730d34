import {
  type CheckRequest,
  checkRequestSchema,
  type Logger,
  type NatsConnection,
  serveCommand,
  Topics,
} from '@aico-update/shared';
import type { Subscription } from '@nats-io/transport-node';
import { answerDevice, type FrontendCatalog } from '../domain/frontends.ts';
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
  catalog: { latest?: FrontendCatalog },
  installedBackend: () => Promise<string | undefined>,
  metrics: CheckerMetrics,
  logger: Logger,
): Subscription {
  const handle = async (request: CheckRequest) => {
    // A device asking for itself: answered from the same verified view as the check it gets (a fresh
    // one when this checker has none yet, e.g. right after a restart with a cached result in Redis).
    let response = await requests.handle(request);
    if (!request.device) return response;
    if (!catalog.latest) response = await requests.fresh(request);
    const latest = catalog.latest;
    if (!latest) return response;
    // Against the backend installed now (it may have changed since that check): backend first.
    const version = await installedBackend();
    const backend =
      latest.releases.find((r) => r.component === 'backend' && r.version === version) ??
      (version ? { version } : latest.backend);
    return { ...response, device_answer: answerDevice(request.device, { ...latest, backend }) };
  };
  return serveCommand(nc, Topics.checkRequest, checkRequestSchema, handle, {
    queue: CHECKER_QUEUE_GROUP,
    logger,
    onMalformed: (reason) => metrics.badRequests.inc({ reason }),
  });
}
