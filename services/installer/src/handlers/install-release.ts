import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeImageArchive } from '@aico-update/image-archive';
import {
  AppError,
  type EventSink,
  type InstallJob,
  type Logger,
  type ReleaseImage,
  type ReleaseManifest,
  releaseManifestSchema,
  StateKeys,
  Topics,
} from '@aico-update/shared';
import type { Redis } from 'ioredis';
import type { Journal, JournalStore, JournalSwap } from '../adapters/journal.ts';
import {
  type InstallStep,
  planInstall,
  previousName,
  type RunningService,
  type StepKind,
} from '../domain/install-plan.ts';
import type { ContainerRuntime } from '../domain/ports.ts';
import type { InstallerMetrics } from '../metrics.ts';

export interface InstallDeps {
  runtime: ContainerRuntime;
  metrics: InstallerMetrics;
  redis: Redis;
  events: EventSink;
  logger: Logger;
  journal: JournalStore;
  /** The verified blob cache the downloader fills (blobs/, manifests/). */
  cacheDir: string;
  /** Service name in the release → container name on this host. */
  services: Record<string, string>;
  /** Optional HTTP health probe per service (e.g. the AICO backend's /api/v1/health). */
  probes: Record<string, string>;
  healthTimeoutMs: number;
  soakMs: number;
}

/** The install failed and was rolled back (or nothing was changed): not retried automatically. */
export class InstallFailed extends AppError {
  readonly rolledBack: boolean;

  constructor(code: string, message: string, rolledBack: boolean, options?: ErrorOptions) {
    super(code, message, options);
    this.rolledBack = rolledBack;
  }
}

export interface InstallOutcome {
  outcome: 'installed' | 'already_installed';
  services: string[];
}

export const HISTORY_KEY = 'aico-update:install-history';

/**
 * Installs one downloaded release: load and verify images, swap, health-gate, commit or roll back.
 * Every step is journaled before and after it runs (see recoverInterrupted for what a restart does).
 */
export async function installRelease(deps: InstallDeps, job: InstallJob): Promise<InstallOutcome> {
  const { release } = job;
  const log = deps.logger.child({ component: release.component, version: release.version });
  const started = Date.now();
  const manifest = await readManifest(deps.cacheDir, release.component, release.version);
  const running: RunningService[] = [];
  for (const image of manifest.images) {
    const container = deps.services[image.service];
    const state = container ? await deps.runtime.container(container) : undefined;
    if (!container || !state) {
      throw new InstallFailed(
        'SERVICE_NOT_FOUND',
        `service "${image.service}" of ${release.component} ${release.version} has no ${container ? `container named ${container}` : 'container declared in installer.services'}; nothing was changed`,
        false,
      );
    }
    running.push({ service: image.service, container, imageId: state.imageId });
  }
  const plan = planInstall(manifest.images, running);
  if (plan.length === 0) {
    await record(deps, job, 'already_installed', Date.now() - started);
    return { outcome: 'already_installed', services: [] };
  }

  const journal: Journal = {
    v: 1,
    job,
    started_at: new Date(started).toISOString(),
    steps: plan.map((step) => ({ ...step, status: 'pending' as const })),
    swaps: [],
  };
  await deps.journal.write(journal);

  const stoppedAtByService = new Map<string, number>();
  const executors: { [K in StepKind]: (step: Extract<InstallStep, { kind: K }>) => Promise<void> } = {
    'load-image': (step) => loadImage(deps, step.image),
    'check-healthy': async (step) => {
      const state = await deps.runtime.container(step.container);
      if (!state?.running || state.health === 'unhealthy') {
        throw new InstallFailed(
          'PREFLIGHT_UNHEALTHY',
          `${step.container} is ${state?.running ? 'unhealthy' : 'not running'} before the update; fix it first (an update must start from a healthy state). Nothing was changed`,
          false,
        );
      }
    },
    swap: async (step) => {
      const current = running.find((r) => r.service === step.service) as RunningService;
      const ref = await deps.runtime.imageRef(step.container);
      // Journaled before anything changes, so a crash from here on is compensated.
      journal.swaps.push({
        service: step.service,
        container: step.container,
        oldImageId: current.imageId,
        ref,
      });
      await deps.journal.write(journal);
      // Move the deployment's tag first: the new container is created from it, and `compose up` keeps it.
      if (ref) await deps.runtime.tag(step.imageId, ref);
      const { stoppedAt } = await deps.runtime.replace(step.container, step.imageId);
      stoppedAtByService.set(step.service, stoppedAt);
    },
    'health-gate': async (step) => {
      const verdict = await deps.runtime.waitHealthy(step.container, {
        timeoutMs: deps.healthTimeoutMs,
        soakMs: deps.soakMs,
        probeUrl: deps.probes[step.service],
        fresh: true,
      });
      if (!verdict.healthy) throw new InstallFailed('HEALTH_GATE_FAILED', verdict.reason, true);
      const stoppedAt = stoppedAtByService.get(step.service);
      if (stoppedAt && verdict.healthyAt)
        deps.metrics.downtime.observe(
          { target_service: step.service },
          (verdict.healthyAt - stoppedAt) / 1000,
        );
    },
    commit: (step) => deps.runtime.remove(previousName(step.container)),
  };

  log.info(
    { steps: plan.map((s) => `${s.kind}:${s.service}`) },
    `installing ${release.component} ${release.version}`,
  );
  try {
    for (const [index, step] of plan.entries()) {
      await setStatus(deps, journal, index, 'started');
      const stepStarted = performance.now();
      await (executors[step.kind] as (s: InstallStep) => Promise<void>)(step);
      deps.metrics.phaseDuration.observe({ phase: step.kind }, (performance.now() - stepStarted) / 1000);
      await setStatus(deps, journal, index, 'done');
    }
  } catch (error) {
    const rolledBack = await rollBack(deps, journal.swaps, log);
    if (journal.swaps.length > 0) {
      deps.metrics.rollbacks.inc({
        component: release.component,
        reason: error instanceof AppError ? error.code : 'INSTALL_FAILED',
      });
    }
    const reason = (error as Error).message;
    await record(deps, job, rolledBack ? 'rolled_back' : 'failed', Date.now() - started, reason);
    await deps.journal.clear();
    log.error(
      { err: error, rolled_back: rolledBack },
      `install of ${release.component} ${release.version} failed: ${reason}`,
    );
    const code = error instanceof AppError ? error.code : 'INSTALL_FAILED';
    throw new InstallFailed(code, reason, journal.swaps.length > 0, { cause: error });
  }
  await record(deps, job, 'installed', Date.now() - started);
  await deps.journal.clear();
  log.info({ duration_ms: Date.now() - started }, `installed ${release.component} ${release.version}`);
  return { outcome: 'installed', services: journal.swaps.map((s) => s.service) };
}

/**
 * After a restart: an install the journal shows unfinished is completed when every health gate had
 * passed (only commits were left), and otherwise compensated: each service whose swap began is put back
 * on its old container and checked healthy. The interrupted job is then replayed by BullMQ.
 */
export async function recoverInterrupted(
  deps: InstallDeps,
): Promise<'none' | 'completed' | 'rolled_back' | 'failed'> {
  const journal = await deps.journal.read();
  if (!journal) return 'none';
  const { release } = journal.job;
  const log = deps.logger.child({ component: release.component, version: release.version, recovery: true });
  const gates = journal.steps.filter((s) => s.kind === 'health-gate');
  const committing = gates.length > 0 && gates.every((s) => s.status === 'done');
  const interruptedAt = journal.steps.findLast((s) => s.status !== 'pending');
  const where = interruptedAt
    ? `${interruptedAt.kind} ${interruptedAt.service} (${interruptedAt.status})`
    : 'the start';
  if (committing) {
    for (const swap of journal.swaps) await deps.runtime.remove(previousName(swap.container));
    await record(
      deps,
      journal.job,
      'installed',
      Date.now() - Date.parse(journal.started_at),
      `completed after a restart at ${where}`,
    );
    await deps.journal.clear();
    log.warn(`finished the commit of ${release.component} ${release.version}, interrupted at ${where}`);
    return 'completed';
  }
  const ok = await rollBack(deps, journal.swaps, log);
  if (journal.swaps.length > 0)
    deps.metrics.rollbacks.inc({ component: release.component, reason: 'INTERRUPTED' });
  await record(
    deps,
    journal.job,
    ok ? 'rolled_back' : 'failed',
    Date.now() - Date.parse(journal.started_at),
    `the installer stopped during ${where}; the previous version was restored`,
  );
  await deps.journal.clear();
  log.warn({ restored: ok }, `rolled back ${release.component} ${release.version}, interrupted at ${where}`);
  return ok ? 'rolled_back' : 'failed';
}

/** Restores every service whose swap began, newest first; true when all came back healthy. */
async function rollBack(deps: InstallDeps, swaps: readonly JournalSwap[], log: Logger): Promise<boolean> {
  let ok = true;
  for (const swap of [...swaps].reverse()) {
    try {
      await restoreService(deps, swap);
      log.warn({ service: swap.service }, `rolled back ${swap.container} to its previous version`);
    } catch (error) {
      ok = false;
      log.error(
        { err: error, service: swap.service },
        `rollback of ${swap.container} did not bring it back healthy`,
      );
    }
  }
  return ok;
}

/** Puts one service back on its old container, wherever the swap had got to. */
async function restoreService(deps: InstallDeps, swap: JournalSwap): Promise<void> {
  if (swap.ref) await deps.runtime.tag(swap.oldImageId, swap.ref);
  const previous = previousName(swap.container);
  if (await deps.runtime.container(previous)) {
    await deps.runtime.restore(swap.container, previous);
  } else {
    // The rename had not happened: the old container is still under its own name.
    await deps.runtime.ensureRunning(swap.container);
  }
  const verdict = await deps.runtime.waitHealthy(swap.container, {
    timeoutMs: deps.healthTimeoutMs,
    soakMs: 0,
    probeUrl: deps.probes[swap.service],
  });
  if (!verdict.healthy) throw new Error(verdict.reason);
}

async function setStatus(
  deps: InstallDeps,
  journal: Journal,
  index: number,
  status: 'started' | 'done',
): Promise<void> {
  const step = journal.steps[index] as Journal['steps'][number];
  step.status = status;
  await deps.journal.write(journal);
  await deps.events.publish(Topics.installProgress, {
    v: 1,
    component: journal.job.release.component,
    version: journal.job.release.version,
    step: step.kind,
    service: step.service,
    status,
    index,
    of: journal.steps.length,
  });
}

async function loadImage(deps: InstallDeps, image: ReleaseImage): Promise<void> {
  if (await deps.runtime.imageExists(image.image_id)) return;
  const blob = (b: { digest: string; length: number }) => ({
    ...b,
    file: join(deps.cacheDir, 'blobs', b.digest.slice('sha256:'.length)),
  });
  const archive = join(deps.cacheDir, `load-${image.service}-${image.image_id.slice(7, 19)}.tar`);
  try {
    await writeImageArchive(
      {
        imageId: image.image_id,
        repoTags: image.repo_tags,
        config: blob(image.config),
        layers: image.layers.map(blob),
      },
      archive,
    );
    await deps.runtime.loadImage(archive);
  } catch (error) {
    throw new InstallFailed(
      'IMAGE_LOAD_FAILED',
      `loading the ${image.service} image failed: ${(error as Error).message}; nothing was stopped`,
      false,
      { cause: error },
    );
  } finally {
    await rm(archive, { force: true });
  }
  if (!(await deps.runtime.imageExists(image.image_id))) {
    throw new InstallFailed(
      'IMAGE_ID_MISMATCH',
      `the loaded ${image.service} image does not have the signed id ${image.image_id}; nothing was stopped`,
      false,
    );
  }
}

async function readManifest(cacheDir: string, component: string, version: string): Promise<ReleaseManifest> {
  try {
    return releaseManifestSchema.parse(
      JSON.parse(await readFile(join(cacheDir, 'manifests', `${component}@${version}.json`), 'utf8')),
    );
  } catch (error) {
    throw new InstallFailed(
      'NOT_DOWNLOADED',
      `${component} ${version} is not downloaded and verified in ${cacheDir}; download it first`,
      false,
      { cause: error },
    );
  }
}

async function record(
  deps: InstallDeps,
  job: InstallJob,
  outcome: string,
  durationMs: number,
  reason?: string,
): Promise<void> {
  const { release } = job;
  deps.metrics.installs.inc({ component: release.component, outcome });
  if (outcome === 'installed')
    deps.metrics.lastSuccess.set({ component: release.component }, Date.now() / 1000);
  if (outcome === 'installed' || outcome === 'already_installed') {
    await deps.redis.hset(StateKeys.installed, release.component, release.version);
  }
  const entry = {
    component: release.component,
    version: release.version,
    outcome,
    reason,
    duration_ms: durationMs,
    at: new Date().toISOString(),
  };
  await deps.redis.lpush(HISTORY_KEY, JSON.stringify(entry));
  await deps.redis.ltrim(HISTORY_KEY, 0, 999);
  await deps.events.publish(Topics.installComplete, {
    v: 1,
    release,
    success: outcome === 'installed' || outcome === 'already_installed',
    outcome,
    ...(reason ? { reason } : {}),
    duration_ms: durationMs,
  });
}
