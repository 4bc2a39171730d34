import { mkdir, readFile, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { writeImageArchive } from '@aico-update/image-archive';
import {
  AppError,
  type EventSink,
  type InstallJob,
  type Logger,
  type ReleaseImage,
  type ReleaseManifest,
  type ReleaseRef,
  type RestartRequired,
  type RollbackRequest,
  releaseManifestSchema,
  StateKeys,
  Topics,
} from '@aico-update/shared';
import type { Redis } from 'ioredis';
import type { Backup, BackupStore } from '../adapters/backup-store.ts';
import type { Journal, JournalStore, JournalSwap } from '../adapters/journal.ts';
import type { PrepareSignal } from '../adapters/prepare-signal.ts';
import {
  type InstallStep,
  type PreviousService,
  planInstall,
  planRollback,
  previousName,
  type RunningService,
  type StepKind,
} from '../domain/install-plan.ts';
import type { ContainerRuntime, SwapStrategy } from '../domain/ports.ts';
import { type InstallerMetrics, showInstalledVersion } from '../metrics.ts';
import { type DataDeclaration, restoreHooks, restoreServiceData, takeBackup } from './data-backup.ts';

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
  strategy: Record<string, SwapStrategy>;
  healthTimeoutMs: number;
  soakMs: number;
  /** start-first: how long the old container drains before it stops. */
  drainMs: number;
  backups: BackupStore;
  backupKeep: number;
  data: DataDeclaration;
  prepare: PrepareSignal;
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
  outcome: 'installed' | 'already_installed' | 'staged' | 'restart_required' | 'rolled_back';
  services: string[];
  backup_id?: string;
}

export const HISTORY_KEY = StateKeys.installHistory;
export const LAST_INSTALL_KEY = StateKeys.lastInstall;

/** What an operator's rollback needs to know of the last install of a component. */
export interface LastInstall {
  release: ReleaseRef;
  from_version: string | undefined;
  backup_id: string | undefined;
  services: PreviousService[];
}

/** Free space kept beyond what an install writes, so the host is not left with a full disk. */
const DISK_HEADROOM_BYTES = 64 * 1024 * 1024;

/**
 * Installs one downloaded release: check disk and health, load and verify images, back up the declared
 * data, signal components, swap, health-gate, commit or roll back. Every step is journaled before and
 * after it runs (see recoverInterrupted for what a restart does).
 */
export async function installRelease(deps: InstallDeps, job: InstallJob): Promise<InstallOutcome> {
  const { release } = job;
  const started = Date.now();
  const manifest = await readManifest(deps.cacheDir, release.component, release.version);
  if (manifest.images.length === 0) return announceArtifacts(deps, job, manifest, started);
  const running = await runningServices(deps, manifest, release);
  const plan = planInstall(manifest.images, running, {
    strategy: deps.strategy,
    backupServices: Object.keys(deps.data.paths),
    backupHooks: deps.data.hooks.length > 0,
    stageOnly: job.auto_restart === false,
  });
  if (plan.length === 0) {
    await record(deps, job, 'already_installed', Date.now() - started);
    return { outcome: 'already_installed', services: [] };
  }
  const journal: Journal = {
    v: 1,
    kind: 'install',
    job,
    from_version: (await deps.redis.hget(StateKeys.installed, release.component)) ?? undefined,
    target_version: release.version,
    started_at: new Date(started).toISOString(),
    steps: plan.map((step) => ({ ...step, status: 'pending' as const })),
    swaps: [],
  };
  await execute(deps, journal, `installing ${release.component} ${release.version}`);
  if (job.auto_restart === false) {
    await deps.journal.clear();
    await announceRestart(
      deps,
      job,
      running.map((r) => r.service),
      started,
    );
    return { outcome: 'staged', services: running.map((r) => r.service) };
  }
  return {
    outcome: 'installed',
    services: journal.swaps.map((s) => s.service),
    ...(journal.backup_id ? { backup_id: journal.backup_id } : {}),
  };
}

/**
 * An operator's rollback of the last install of a component: back to the images it replaced (and,
 * with a backup id, to that backup's data). Journaled like an install; a failure puts the newer
 * version back.
 */
export async function rollbackLastInstall(
  deps: InstallDeps,
  request: RollbackRequest,
): Promise<InstallOutcome> {
  const stored = await deps.redis.hget(LAST_INSTALL_KEY, request.component);
  if (!stored) {
    throw new InstallFailed(
      'NOTHING_TO_ROLL_BACK',
      `no install of ${request.component} is recorded to roll back (a rollback undoes the last install, once)`,
      false,
    );
  }
  const last = JSON.parse(stored) as LastInstall;
  let backup: Backup | undefined;
  if (request.backup_id) {
    backup = await deps.backups.read(request.backup_id);
    if (!backup || backup.component !== request.component) {
      const known = (await deps.backups.list()).map((b) => b.id);
      throw new InstallFailed(
        'BACKUP_NOT_FOUND',
        `backup ${request.backup_id} of ${request.component} does not exist; known backups: ${known.join(', ') || 'none'}`,
        false,
      );
    }
  }
  const running: RunningService[] = [];
  for (const previous of last.services) {
    const state = await deps.runtime.container(previous.container);
    if (!state) {
      throw new InstallFailed(
        'SERVICE_NOT_FOUND',
        `container ${previous.container} does not exist; nothing was changed`,
        false,
      );
    }
    if (!(await deps.runtime.imageExists(previous.imageId))) {
      throw new InstallFailed(
        'PREVIOUS_IMAGE_MISSING',
        `the image ${previous.container} ran before (${previous.imageId}) is no longer on this host; install ${last.from_version ?? 'the previous version'} as a release instead. Nothing was changed`,
        false,
      );
    }
    running.push({
      service: previous.service,
      container: previous.container,
      imageId: state.imageId,
      fixedHostPort: state.fixedHostPort,
    });
  }
  const started = Date.now();
  const plan = planRollback(last.services, running, { strategy: deps.strategy, backupId: backup?.id });
  const job: InstallJob = { v: 1, release: last.release, reason: 'request', auto_restart: true };
  const journal: Journal = {
    v: 1,
    kind: 'rollback',
    job,
    from_version: last.release.version,
    target_version: last.from_version,
    reason: `operator request${request.source ? ` from ${request.source}` : ''}${backup ? `, data restored from ${backup.id}` : ''}`,
    started_at: new Date(started).toISOString(),
    steps: plan.map((step) => ({ ...step, status: 'pending' as const })),
    swaps: [],
  };
  await execute(
    deps,
    journal,
    `rolling back ${last.release.component} ${last.release.version} to ${last.from_version}`,
  );
  return { outcome: 'rolled_back', services: journal.swaps.map((s) => s.service) };
}

/**
 * After a restart: an install the journal shows unfinished is completed when every health gate had
 * passed (only commits were left), and otherwise compensated: each service whose swap began is put back
 * on its old container (with its data, when a backup was taken) and checked healthy. The interrupted
 * job is then replayed by BullMQ.
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
  const duration = Date.now() - Date.parse(journal.started_at);
  if (committing) {
    for (const swap of journal.swaps) await deps.runtime.remove(previousName(swap.container));
    await finish(deps, journal, duration, `completed after a restart at ${where}`);
    await deps.journal.clear();
    log.warn(`finished the commit of ${release.component} ${release.version}, interrupted at ${where}`);
    return 'completed';
  }
  const ok = await rollBack(deps, journal, log);
  if (journal.swaps.length > 0)
    deps.metrics.rollbacks.inc({ component: release.component, reason: 'INTERRUPTED' });
  const what = journal.kind === 'rollback' ? `the rollback to ${journal.target_version}` : 'the install';
  await record(
    deps,
    journal.job,
    journal.kind === 'rollback' ? 'failed' : ok ? 'rolled_back' : 'failed',
    duration,
    `the installer stopped during ${where} of ${what}; the version that ran before was restored`,
  );
  await deps.journal.clear();
  log.warn({ restored: ok }, `undid ${what} of ${release.component}, interrupted at ${where}`);
  return ok ? 'rolled_back' : 'failed';
}

/** Runs a journaled plan; on failure puts back every service whose swap began, then throws InstallFailed. */
async function execute(deps: InstallDeps, journal: Journal, what: string): Promise<void> {
  const { release } = journal.job;
  const log = deps.logger.child({
    component: release.component,
    version: release.version,
    kind: journal.kind,
  });
  const started = Date.parse(journal.started_at);
  await deps.journal.write(journal);
  const executors = executorsFor(deps, journal, log);
  log.info({ steps: journal.steps.map((s) => `${s.kind}:${s.service}`) }, what);
  try {
    for (const [index, step] of journal.steps.entries()) {
      await setStatus(deps, journal, index, 'started');
      const stepStarted = performance.now();
      await (executors[step.kind] as (s: InstallStep) => Promise<void>)(step);
      deps.metrics.phaseDuration.observe({ phase: step.kind }, (performance.now() - stepStarted) / 1000);
      await setStatus(deps, journal, index, 'done');
    }
  } catch (error) {
    const restored = await rollBack(deps, journal, log);
    const code = error instanceof AppError ? error.code : 'INSTALL_FAILED';
    if (journal.swaps.length > 0) deps.metrics.rollbacks.inc({ component: release.component, reason: code });
    const reason = `${(error as Error).message}${journal.swaps.length > 0 ? (restored ? '; the previous state was restored' : '; restoring the previous state FAILED, see the installer log') : ''}`;
    const outcome =
      journal.swaps.length > 0 && restored && journal.kind === 'install' ? 'rolled_back' : 'failed';
    await record(deps, journal.job, outcome, Date.now() - started, reason);
    await deps.journal.clear();
    log.error({ err: error, rolled_back: restored }, `${what} failed: ${reason}`);
    throw new InstallFailed(code, reason, journal.swaps.length > 0, { cause: error });
  }
  if (journal.job.auto_restart === false) return;
  await finish(deps, journal, Date.now() - started, journal.reason);
  await deps.journal.clear();
  log.info({ duration_ms: Date.now() - started }, `${what}: done`);
}

/** Records a finished install (what an operator's rollback would undo) or a finished rollback. */
async function finish(
  deps: InstallDeps,
  journal: Journal,
  durationMs: number,
  reason?: string,
): Promise<void> {
  const { component } = journal.job.release;
  if (journal.kind === 'rollback') {
    await deps.redis.hdel(LAST_INSTALL_KEY, component);
    if (journal.target_version) {
      await deps.redis.hset(StateKeys.installed, component, journal.target_version);
      showInstalledVersion(deps.metrics, component, journal.target_version);
    }
    deps.metrics.rollbacks.inc({ component, reason: 'OPERATOR_REQUEST' });
    await record(deps, journal.job, 'rolled_back', durationMs, reason);
    return;
  }
  const last: LastInstall = {
    release: journal.job.release,
    from_version: journal.from_version,
    backup_id: journal.backup_id,
    services: journal.swaps.map((s) => ({
      service: s.service,
      container: s.container,
      imageId: s.oldImageId,
    })),
  };
  await deps.redis.hset(LAST_INSTALL_KEY, component, JSON.stringify(last));
  await record(deps, journal.job, 'installed', durationMs, reason, journal.backup_id);
}

type Executors = { [K in StepKind]: (step: Extract<InstallStep, { kind: K }>) => Promise<void> };

function executorsFor(deps: InstallDeps, journal: Journal, log: Logger): Executors {
  const { release } = journal.job;
  const stoppedAtByService = new Map<string, number>();
  const backupOf = async (id: string) => {
    const backup = await deps.backups.read(id);
    if (!backup) throw new AppError('BACKUP_NOT_FOUND', `backup ${id} disappeared from ${deps.backups.dir}`);
    return backup;
  };
  return {
    'check-disk': async (step) => {
      const needs = [
        {
          dir: deps.cacheDir,
          key: 'installer.cache_dir',
          bytes: step.bytes,
          what: 'the image archive docker load reads',
        },
      ];
      if (journal.steps.some((s) => s.kind === 'backup')) {
        await mkdir(deps.backups.dir, { recursive: true });
        needs.push({
          dir: deps.backups.dir,
          key: 'installer.backup.dir',
          bytes: await deps.backups.lastSize(release.component),
          what: 'the data backup (estimated from the last one)',
        });
      }
      for (const need of needs) {
        const fs = await statfs(need.dir);
        const free = fs.bavail * fs.bsize;
        if (free < need.bytes + DISK_HEADROOM_BYTES) {
          throw new InstallFailed(
            'DISK_FULL',
            `not enough free disk in ${need.dir} (${need.key}) for ${need.what}: ${mib(need.bytes)} MiB + ${mib(DISK_HEADROOM_BYTES)} MiB headroom needed, ${mib(free)} MiB free. Free space there. Nothing was changed`,
            false,
          );
        }
      }
    },
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
    'load-image': (step) => loadImage(deps, step.image),
    backup: async (step) => {
      const backup = await takeBackup(deps.runtime, deps.backups, deps.data, {
        component: release.component,
        fromVersion: journal.from_version ?? 'unknown',
        toVersion: release.version,
        containers: Object.fromEntries(step.services.map((s) => [s, deps.services[s] as string])),
      });
      journal.backup_id = backup.id;
      await deps.journal.write(journal);
      const removed = await deps.backups.prune(deps.backupKeep, [backup.id]);
      log.info({ backup_id: backup.id, pruned: removed }, `backed up the data in ${backup.id}`);
    },
    prepare: async (step) => {
      const outcome = await deps.prepare({
        v: 1,
        update_id: `${release.component}-${release.version}`,
        component: release.component,
        version: release.version,
        services: step.services,
        estimated_downtime_seconds: Math.ceil(deps.healthTimeoutMs / 1000),
      });
      log.info({ ...outcome }, 'components prepared');
    },
    'restore-data': async (step) => {
      await deps.runtime.stop(step.container);
      await restoreServiceData(
        deps.runtime,
        deps.backups,
        await backupOf(step.backupId),
        step.service,
        step.container,
      );
    },
    'restore-hooks': async (step) => restoreHooks(deps.runtime, deps.backups, await backupOf(step.backupId)),
    swap: async (step) => {
      if (step.note) log.warn(step.note);
      const ref = await deps.runtime.imageRef(step.container);
      // Journaled before anything changes, so a crash from here on is compensated.
      journal.swaps.push({
        service: step.service,
        container: step.container,
        oldImageId: step.fromImageId,
        ref,
      });
      await deps.journal.write(journal);
      // Move the deployment's tag first: the new container is created from it, and `compose up` keeps it.
      if (ref) await deps.runtime.tag(step.imageId, ref);
      const { stoppedAt } = await deps.runtime.replace(step.container, step.imageId, {
        strategy: step.strategy,
        readyTimeoutMs: deps.healthTimeoutMs,
        drainMs: deps.drainMs,
        probeUrl: deps.probes[step.service],
      });
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
          Math.max(0, verdict.healthyAt - stoppedAt) / 1000,
        );
    },
    commit: (step) => deps.runtime.remove(previousName(step.container)),
  };
}

/**
 * Restores every service whose swap began, newest first, with its data when the journal has a backup
 * (the new version ran and may have changed it); true when all came back healthy.
 */
async function rollBack(deps: InstallDeps, journal: Journal, log: Logger): Promise<boolean> {
  const backup = journal.backup_id ? await deps.backups.read(journal.backup_id) : undefined;
  let ok = true;
  for (const swap of [...journal.swaps].reverse()) {
    try {
      const dataRestored = await restoreService(deps, swap, backup);
      log.warn(
        { service: swap.service, data_restored: dataRestored },
        `rolled back ${swap.container} to its previous version${dataRestored ? ` and its data from ${backup?.id}` : ''}`,
      );
    } catch (error) {
      ok = false;
      log.error(
        { err: error, service: swap.service },
        `rollback of ${swap.container} did not bring it back healthy`,
      );
    }
  }
  if (backup && backup.hooks.length > 0 && journal.swaps.length > 0) {
    try {
      await restoreHooks(deps.runtime, deps.backups, backup);
      log.warn(`restored the hooks' data from ${backup.id}`);
    } catch (error) {
      ok = false;
      log.error({ err: error }, `restoring the hooks' data from ${backup.id} failed`);
    }
  }
  return ok;
}

/** Puts one service back on its old container, wherever the swap had got to; true when data was restored. */
async function restoreService(
  deps: InstallDeps,
  swap: JournalSwap,
  backup: Backup | undefined,
): Promise<boolean> {
  if (swap.ref) await deps.runtime.tag(swap.oldImageId, swap.ref);
  const previous = previousName(swap.container);
  let dataRestored = false;
  if (await deps.runtime.container(previous)) {
    const withData = backup?.entries.some((e) => e.service === swap.service);
    await deps.runtime.restore(
      swap.container,
      previous,
      withData && backup
        ? async () => {
            try {
              dataRestored = await restoreServiceData(
                deps.runtime,
                deps.backups,
                backup,
                swap.service,
                swap.container,
              );
            } catch (error) {
              // Not started: the old version must not run on data the new one may have migrated.
              throw new AppError(
                'RESTORE_FAILED',
                `restoring the data of ${swap.container} from backup ${backup.id} (${deps.backups.folder(backup.id)}) failed: ${(error as Error).message}. ${swap.container} was left stopped so that the old version does not run on the new version's data; restore the backup by hand (README, "Backups") and start it`,
                { cause: error },
              );
            }
          }
        : undefined,
    );
  } else {
    // The rename had not happened: the old container is still under its own name, its data untouched.
    await deps.runtime.ensureRunning(swap.container);
  }
  const verdict = await deps.runtime.waitHealthy(swap.container, {
    timeoutMs: deps.healthTimeoutMs,
    soakMs: 0,
    probeUrl: deps.probes[swap.service],
  });
  if (!verdict.healthy) throw new Error(verdict.reason);
  return dataRestored;
}

async function runningServices(
  deps: InstallDeps,
  manifest: ReleaseManifest,
  release: ReleaseRef,
): Promise<RunningService[]> {
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
    running.push({
      service: image.service,
      container,
      imageId: state.imageId,
      fixedHostPort: state.fixedHostPort,
    });
  }
  return running;
}

/**
 * A release without images (a frontend's platform packages) has nothing for the installer to swap:
 * its verified artifacts are in the cache, and the frontends apply it when they restart.
 */
async function announceArtifacts(
  deps: InstallDeps,
  job: InstallJob,
  manifest: ReleaseManifest,
  started: number,
): Promise<InstallOutcome> {
  await announceRestart(
    deps,
    job,
    manifest.artifacts.map((a) => a.name),
    started,
  );
  return { outcome: 'restart_required', services: [] };
}

async function announceRestart(
  deps: InstallDeps,
  job: InstallJob,
  services: string[],
  started: number,
): Promise<void> {
  const { release } = job;
  const message =
    services.length > 0 && job.auto_restart === false
      ? `${release.component} ${release.version} is loaded and verified; it is applied when ${release.component} restarts (an install request with auto_restart)`
      : `${release.component} ${release.version} is downloaded and verified; ${release.component} applies it when it restarts`;
  const required: RestartRequired = {
    v: 1,
    component: release.component,
    version: release.version,
    services,
    message,
  };
  await deps.events.publish(
    Topics.restartRequired,
    required,
    `restart-required-${release.component}-${release.version}`,
  );
  await record(deps, job, 'restart_required', Date.now() - started, message);
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
    kind: journal.kind,
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

export async function readManifest(
  cacheDir: string,
  component: string,
  version: string,
): Promise<ReleaseManifest> {
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
  backupId?: string,
): Promise<void> {
  const { release } = job;
  deps.metrics.installs.inc({ component: release.component, outcome });
  if (outcome === 'installed')
    deps.metrics.lastSuccess.set({ component: release.component }, Date.now() / 1000);
  if (outcome === 'installed' || outcome === 'already_installed') {
    await deps.redis.hset(StateKeys.installed, release.component, release.version);
    showInstalledVersion(deps.metrics, release.component, release.version);
  }
  const entry = {
    component: release.component,
    version: release.version,
    outcome,
    reason,
    backup_id: backupId,
    duration_ms: durationMs,
    at: new Date().toISOString(),
  };
  await deps.redis.lpush(HISTORY_KEY, JSON.stringify(entry));
  await deps.redis.ltrim(HISTORY_KEY, 0, 999);
  await deps.events.publish(Topics.installComplete, {
    v: 1,
    release,
    success: ['installed', 'already_installed', 'restart_required'].includes(outcome),
    outcome,
    ...(reason ? { reason } : {}),
    ...(backupId ? { backup_id: backupId } : {}),
    duration_ms: durationMs,
  });
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}
