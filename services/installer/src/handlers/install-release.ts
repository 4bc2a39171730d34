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
import { type InstallStep, planInstall, type RunningService, type StepKind } from '../domain/install-plan.ts';
import type { ContainerRuntime } from '../domain/ports.ts';

export interface InstallDeps {
  runtime: ContainerRuntime;
  redis: Redis;
  events: EventSink;
  logger: Logger;
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

interface Swapped {
  service: string;
  container: string;
  previous: string;
  oldImageId: string;
  ref: string | undefined;
}

/** Installs one downloaded release: load and verify images, swap, health-gate, commit or roll back. */
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
  const swapped: Swapped[] = [];
  const progress = (step: InstallStep, status: 'started' | 'done') =>
    deps.events.publish(Topics.installProgress, {
      v: 1,
      component: release.component,
      version: release.version,
      step: step.kind,
      service: step.service,
      status,
    });

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
      // Move the deployment's tag first: the new container is created from it, and `compose up` keeps it.
      if (ref) await deps.runtime.tag(step.imageId, ref);
      const entry: Swapped = {
        service: step.service,
        container: step.container,
        previous: '',
        oldImageId: current.imageId,
        ref,
      };
      swapped.push(entry);
      entry.previous = await deps.runtime.replace(step.container, step.imageId);
    },
    'health-gate': async (step) => {
      const verdict = await deps.runtime.waitHealthy(step.container, {
        timeoutMs: deps.healthTimeoutMs,
        soakMs: deps.soakMs,
        probeUrl: deps.probes[step.service],
      });
      if (!verdict.healthy) throw new InstallFailed('HEALTH_GATE_FAILED', verdict.reason, true);
    },
    commit: async (step) => {
      const entry = swapped.find((s) => s.service === step.service);
      if (entry?.previous) await deps.runtime.remove(entry.previous);
    },
  };

  if (plan.length === 0) {
    await record(deps, job, 'already_installed', Date.now() - started);
    return { outcome: 'already_installed', services: [] };
  }
  log.info(
    { steps: plan.map((s) => `${s.kind}:${s.service}`) },
    `installing ${release.component} ${release.version}`,
  );
  try {
    for (const step of plan) {
      await progress(step, 'started');
      await (executors[step.kind] as (s: InstallStep) => Promise<void>)(step);
      await progress(step, 'done');
    }
  } catch (error) {
    const rolledBack = await rollBack(deps, swapped, log);
    const reason = (error as Error).message;
    await record(deps, job, rolledBack ? 'rolled_back' : 'failed', Date.now() - started, reason);
    log.error(
      { err: error, rolled_back: rolledBack },
      `install of ${release.component} ${release.version} failed: ${reason}`,
    );
    if (error instanceof InstallFailed)
      throw new InstallFailed(error.code, reason, swapped.length > 0, { cause: error });
    throw new InstallFailed('INSTALL_FAILED', reason, swapped.length > 0, { cause: error });
  }
  await record(deps, job, 'installed', Date.now() - started);
  log.info({ duration_ms: Date.now() - started }, `installed ${release.component} ${release.version}`);
  return { outcome: 'installed', services: swapped.map((s) => s.service) };
}

/** Restores every swapped service, newest first; true when all came back. */
async function rollBack(deps: InstallDeps, swapped: Swapped[], log: Logger): Promise<boolean> {
  let ok = true;
  for (const entry of [...swapped].reverse()) {
    try {
      if (entry.ref) await deps.runtime.tag(entry.oldImageId, entry.ref);
      if (entry.previous) await deps.runtime.restore(entry.container, entry.previous);
      const verdict = await deps.runtime.waitHealthy(entry.container, {
        timeoutMs: deps.healthTimeoutMs,
        soakMs: 0,
        probeUrl: deps.probes[entry.service],
      });
      if (!verdict.healthy) throw new Error(verdict.reason);
      log.warn({ service: entry.service }, `rolled back ${entry.container} to its previous version`);
    } catch (error) {
      ok = false;
      log.error(
        { err: error, service: entry.service },
        `rollback of ${entry.container} did not bring it back healthy`,
      );
    }
  }
  return ok;
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
      {
        cause: error,
      },
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
