import { mkdir, statfs } from 'node:fs/promises';
import { AppError, type Logger, StateKeys, Topics } from '@aico-update/shared';
import type { Backup } from '../adapters/backup-store.ts';
import type { LastInstall } from '../adapters/installer-state.ts';
import type { Journal, JournalSwap } from '../adapters/journal.ts';
import { InstallFailed } from '../domain/install-failed.ts';
import { type InstallStep, previousName, type StepKind } from '../domain/install-plan.ts';
import { showInstalledVersion } from '../metrics.ts';
import { restoreHooks, restoreServiceData, takeBackup } from './data-backup.ts';
import { record, type StepTiming } from './history.ts';
import { countAutomaticFailure, publishInstallerStatus, quarantine } from './holds.ts';
import type { InstallDeps } from './install-release.ts';
import { loadImage } from './load-image.ts';
import { requireHealthy } from './preflight-health.ts';

/*
 * Runs a journaled plan: each step written to the journal before and after it runs, an executor per
 * step kind, and on any failure every service whose swap began put back (with its data when a backup
 * was taken). The plan itself is pure (domain/install-plan.ts).
 */

/** Free space kept beyond what an install writes, so the host is not left with a full disk. */
export const DISK_HEADROOM_BYTES = 64 * 1024 * 1024;

/** Runs a journaled plan; on failure puts back every service whose swap began, then throws InstallFailed. */
export async function execute(deps: InstallDeps, journal: Journal, what: string): Promise<void> {
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
  const timings: StepTiming[] = [];
  try {
    for (const [index, step] of journal.steps.entries()) {
      await setStatus(deps, journal, index, 'started');
      const stepStarted = performance.now();
      await (executors[step.kind] as (s: InstallStep) => Promise<void>)(step);
      const ms = performance.now() - stepStarted;
      deps.metrics.phaseDuration.observe({ phase: step.kind }, ms / 1000);
      timings.push({ step: step.kind, service: step.service, ms: Math.round(ms) });
      await setStatus(deps, journal, index, 'done');
    }
  } catch (error) {
    const restored = await rollBack(deps, journal, log);
    const code = error instanceof AppError ? error.code : 'INSTALL_FAILED';
    if (journal.swaps.length > 0) deps.metrics.rollbacks.inc({ component: release.component, reason: code });
    const reason = `${(error as Error).message}${journal.swaps.length > 0 ? (restored ? '; the previous state was restored' : '; restoring the previous state FAILED, see the installer log') : ''}`;
    const outcome =
      journal.swaps.length > 0 && restored && journal.kind === 'install' ? 'rolled_back' : 'failed';
    // The release ran here and failed: it is not offered or installed by itself again (the event says so).
    const quarantined = journal.kind === 'install' && journal.swaps.length > 0;
    const told = quarantined
      ? `${reason}. ${release.version} is quarantined: not offered or installed by itself again; an install request naming it retries it`
      : reason;
    await record(deps, journal.job, outcome, Date.now() - started, told, undefined, timings);
    await deps.journal.clear();
    log.error({ err: error, rolled_back: restored }, `${what} failed: ${reason}`);
    if (journal.kind === 'install') {
      if (quarantined) await quarantine(deps, release, code, reason);
      if (journal.job.reason !== 'request') await countAutomaticFailure(deps, release, reason);
    }
    throw new InstallFailed(code, reason, journal.swaps.length > 0, { cause: error });
  }
  if (journal.job.auto_restart === false) return;
  await finish(deps, journal, Date.now() - started, journal.reason, timings);
  await deps.journal.clear();
  log.info({ duration_ms: Date.now() - started }, `${what}: done`);
}

/** Records a finished install (what an operator's rollback would undo) or a finished rollback. */
export async function finish(
  deps: InstallDeps,
  journal: Journal,
  durationMs: number,
  reason?: string,
  timings?: readonly StepTiming[],
): Promise<void> {
  const { component } = journal.job.release;
  const now = new Date().toISOString();
  if (journal.kind === 'rollback') {
    if (journal.target_version) {
      const current = await deps.state.installed(component);
      await deps.state.recordInstalled(
        component,
        {
          version: journal.target_version,
          images: { ...current?.images, ...journal.images },
          installed_at: now,
        },
        null,
      );
      await deps.redis.hset(StateKeys.installed, component, journal.target_version);
      showInstalledVersion(deps.metrics, component, journal.target_version);
    }
    deps.metrics.rollbacks.inc({ component, reason: 'OPERATOR_REQUEST' });
    await record(deps, journal.job, 'rolled_back', durationMs, reason, undefined, timings);
    return;
  }
  const last: LastInstall = {
    release: journal.job.release,
    ...(journal.from_version ? { from_version: journal.from_version } : {}),
    ...(journal.backup_id ? { backup_id: journal.backup_id } : {}),
    services: journal.swaps.map((s) => ({
      service: s.service,
      container: s.container,
      imageId: s.oldImageId,
    })),
  };
  await deps.state.recordInstalled(
    component,
    { version: journal.job.release.version, images: journal.images ?? {}, installed_at: now },
    last,
  );
  await record(deps, journal.job, 'installed', durationMs, reason, journal.backup_id, timings);
  // A quarantined release retried by an operator, and older holds of the component, are settled.
  await deps.holds.installed(journal.job.release);
  await publishInstallerStatus(deps);
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
    'check-disk': async () => {
      // The images stream from the verified blobs straight to the engine (no archive is written here);
      // the backup needs room on the installer's own volume.
      const needs: { dir: string; key: string; bytes: number; what: string }[] = [];
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
    'check-healthy': (step) =>
      requireHealthy(
        deps.runtime,
        step.container,
        deps.healthTimeoutMs,
        'fix it first (an update must start from a healthy state)',
      ),
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
      const backup = await backupOf(step.backupId);
      await deps.runtime.stop(step.container);
      try {
        await restoreServiceData(deps.runtime, deps.backups, backup, step.service, step.container);
      } catch (error) {
        // The restore extracts into a staging folder first: the live data is untouched. Run on it again.
        await deps.runtime.ensureRunning(step.container);
        const back = await deps.runtime.waitHealthy(step.container, {
          timeoutMs: deps.healthTimeoutMs,
          soakMs: 0,
          probeUrl: deps.probes[step.service],
        });
        throw new AppError(
          'RESTORE_FAILED',
          `restoring the data of ${step.container} from backup ${backup.id} failed: ${(error as Error).message}. Its data was left as it was and it runs again on it${back.healthy ? ', healthy' : ` but is not healthy (${back.reason})`}`,
          { cause: error },
        );
      }
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
      // Verified after installation too: the container runs the image the signed manifest names.
      const swap = journal.steps.find((s) => s.kind === 'swap' && s.service === step.service);
      const running = await deps.runtime.container(step.container);
      if (swap?.kind === 'swap' && running?.imageId !== swap.imageId) {
        throw new InstallFailed(
          'IMAGE_MISMATCH_AFTER_SWAP',
          `${step.container} runs ${running?.imageId ?? 'nothing'} after the swap, not the signed image ${swap.imageId}`,
          true,
        );
      }
      const stoppedAt = stoppedAtByService.get(step.service);
      if (stoppedAt && verdict.healthyAt) {
        const seconds = Math.max(0, verdict.healthyAt - stoppedAt) / 1000;
        deps.metrics.downtime.observe({ target_service: step.service }, seconds);
        await deps.state.recordDowntime(step.service, seconds);
      }
    },
    commit: (step) => deps.runtime.remove(previousName(step.container)),
  };
}

/**
 * Restores every service whose swap began, newest first, with its data when the journal has a backup
 * (the new version ran and may have changed it); true when all came back healthy.
 */
export async function rollBack(deps: InstallDeps, journal: Journal, log: Logger): Promise<boolean> {
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

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}
