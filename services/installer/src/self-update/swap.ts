import type { Logger } from '@aico-update/shared';
import { previousName } from '../domain/install-plan.ts';
import type { ContainerRuntime } from '../domain/ports.ts';
import { type IntentStore, type SelfUpdateIntent, type SelfUpdateService, stepOf } from './intent.ts';

/*
 * The swap the installer cannot do to itself, as the helper container runs it: the update system's
 * services one at a time in the intent's order (the installer last), each health-gated through its soak;
 * on any failure every service whose swap began is put back on its old image, newest first. A helper that
 * finds the intent already past its start (it crashed and Docker started it again) does not guess how far
 * the swap got: it puts everything back. Each service's swap is journaled before it begins, so whatever
 * instant the helper dies at, the next run knows which ones to restore.
 */

/** What a helper run left: the outcome in the intent. */
export async function runSelfUpdate(
  runtime: ContainerRuntime,
  store: IntentStore,
  intent: SelfUpdateIntent,
  logger: Logger,
): Promise<SelfUpdateIntent> {
  if (intent.outcome) {
    if (intent.outcome.result === 'committed') await removePrevious(runtime, intent);
    return intent;
  }
  if (intent.phase !== 'started') {
    const last = intent.steps.at(-1);
    return rollBackAll(
      runtime,
      store,
      intent,
      logger,
      `the self-update helper stopped unexpectedly${last ? ` during ${last.step} of ${last.service}` : ''} and was started again`,
    );
  }
  intent.phase = 'swapping';
  await store.write(intent);
  for (const service of intent.services) {
    const failure = await swapOne(runtime, store, intent, service, logger);
    if (failure) return rollBackAll(runtime, store, intent, logger, failure);
  }
  intent.phase = 'finished';
  intent.steps.push(stepOf('commit', 'all', 'done'));
  intent.outcome = {
    result: 'committed',
    reason: `every service of the update system runs ${intent.release.version}, healthy through its soak`,
    at: new Date().toISOString(),
  };
  await store.write(intent);
  logger.info({ version: intent.release.version }, 'self-update committed');
  await removePrevious(runtime, intent);
  return intent;
}

/** Swaps one service and health-gates it; the reason it failed, or undefined. */
async function swapOne(
  runtime: ContainerRuntime,
  store: IntentStore,
  intent: SelfUpdateIntent,
  service: SelfUpdateService,
  logger: Logger,
): Promise<string | undefined> {
  const name = service.service;
  intent.swapped.push(name);
  intent.steps.push(stepOf('swap', name, 'started'));
  await store.write(intent);
  const started = performance.now();
  try {
    if (service.ref) await runtime.tag(service.new_image_id, service.ref);
    await runtime.replace(service.container, service.new_image_id, {
      strategy: 'stop-first',
      readyTimeoutMs: intent.health_timeout_ms,
      drainMs: 0,
    });
  } catch (error) {
    return `swapping ${name} (${service.container}) failed: ${(error as Error).message}`;
  }
  intent.steps.push(stepOf('swap', name, 'done', { ms: Math.round(performance.now() - started) }));
  intent.steps.push(stepOf('health-gate', name, 'started'));
  await store.write(intent);
  const gateStarted = performance.now();
  const verdict = await runtime.waitHealthy(service.container, {
    timeoutMs: intent.health_timeout_ms,
    soakMs: intent.soak_ms,
    fresh: true,
  });
  const running = await runtime.container(service.container);
  const reason = !verdict.healthy
    ? `the new ${name} did not pass its health gate: ${verdict.reason}`
    : running?.imageId !== service.new_image_id
      ? `${service.container} runs ${running?.imageId ?? 'nothing'} after the swap, not the signed image ${service.new_image_id}`
      : undefined;
  const ms = Math.round(performance.now() - gateStarted);
  intent.steps.push(
    stepOf('health-gate', name, reason ? 'failed' : 'done', { ms, ...(reason ? { detail: reason } : {}) }),
  );
  await store.write(intent);
  if (!reason) logger.info({ service: name, ms }, `${name} runs ${intent.release.version}, healthy`);
  return reason;
}

/** Puts every service whose swap began back on its old image, newest first; the outcome says how it went. */
export async function rollBackAll(
  runtime: ContainerRuntime,
  store: IntentStore,
  intent: SelfUpdateIntent,
  logger: Logger,
  why: string,
): Promise<SelfUpdateIntent> {
  logger.error({ reason: why }, 'self-update failed; putting every service back');
  intent.phase = 'rolling_back';
  await store.write(intent);
  const failed: string[] = [];
  for (const name of [...intent.swapped].reverse()) {
    const service = intent.services.find((s) => s.service === name) as SelfUpdateService;
    intent.steps.push(stepOf('roll-back', name, 'started'));
    await store.write(intent);
    const started = performance.now();
    const problem = await restoreOne(runtime, intent, service).catch((error: Error) => error.message);
    if (problem) failed.push(`${name}: ${problem}`);
    intent.steps.push(
      stepOf('roll-back', name, problem ? 'failed' : 'done', {
        ms: Math.round(performance.now() - started),
        ...(problem ? { detail: problem } : {}),
      }),
    );
    await store.write(intent);
  }
  intent.phase = 'finished';
  const from = intent.from_version ?? 'the previous version';
  intent.outcome =
    failed.length === 0
      ? {
          result: 'rolled_back',
          reason: `${why}; every service was put back on ${from}`,
          at: new Date().toISOString(),
        }
      : {
          result: 'failed',
          reason: `${why}; putting the services back on ${from} FAILED for ${failed.join('; ')}. Start them by hand (docker compose up -d) and see the helper's log (docker logs ${intent.helper})`,
          at: new Date().toISOString(),
        };
  await store.write(intent);
  return intent;
}

/** One service back on its old container and image, wherever its swap got to; the problem, if any. */
async function restoreOne(
  runtime: ContainerRuntime,
  intent: SelfUpdateIntent,
  service: SelfUpdateService,
): Promise<string | undefined> {
  if (service.ref) await runtime.tag(service.old_image_id, service.ref);
  const previous = previousName(service.container);
  if (await runtime.container(previous)) await runtime.restore(service.container, previous);
  else await runtime.ensureRunning(service.container);
  const running = await runtime.container(service.container);
  if (running?.imageId !== service.old_image_id) {
    return `${service.container} runs ${running?.imageId ?? 'nothing'}, not its old image ${service.old_image_id}`;
  }
  const verdict = await runtime.waitHealthy(service.container, {
    timeoutMs: intent.health_timeout_ms,
    soakMs: 0,
  });
  return verdict.healthy ? undefined : verdict.reason;
}

/** The old containers, once the new ones are committed (idempotent: any run after the commit does it). */
export async function removePrevious(runtime: ContainerRuntime, intent: SelfUpdateIntent): Promise<void> {
  for (const service of intent.services) await runtime.remove(previousName(service.container));
}
