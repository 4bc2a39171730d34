import type { RollbackRequest } from '@aico-update/shared';
import type { Backup } from '../adapters/backup-store.ts';
import type { Journal } from '../adapters/journal.ts';
import { InstallFailed } from '../domain/install-failed.ts';
import { planRollback, previousName, type RunningService } from '../domain/install-plan.ts';
import type { InstallOrder } from '../domain/install-policy.ts';
import { record } from './history.ts';
import type { InstallDeps, InstallOutcome } from './install-release.ts';
import { execute, finish, rollBack } from './plan-executor.ts';

/* An operator's rollback of the last install, and what a restart does with an interrupted one. */

/**
 * An operator's rollback of the last install of a component: back to the images it replaced (and,
 * with a backup id, to that backup's data). Journaled like an install; a failure puts the newer
 * version back.
 */
export async function rollbackLastInstall(
  deps: InstallDeps,
  request: RollbackRequest,
): Promise<InstallOutcome> {
  // From the installer's own volume: nothing another service wrote can say which containers to recreate.
  const last = await deps.state.lastInstall(request.component);
  if (!last) {
    throw new InstallFailed(
      'NOTHING_TO_ROLL_BACK',
      `no install of ${request.component} is recorded to roll back (a rollback undoes the last install, once)`,
      false,
    );
  }
  const backup = await backupToRestore(deps, request, last);
  const running: RunningService[] = [];
  for (const previous of last.services) {
    if (deps.services[previous.service] !== previous.container) {
      throw new InstallFailed(
        'SERVICE_NOT_MANAGED',
        `the last install of ${request.component} names ${previous.container} for service ${previous.service}, which installer.services does not (it names ${deps.services[previous.service] ?? 'nothing'}); nothing was changed`,
        false,
      );
    }
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
  const job: InstallOrder = { v: 1, release: last.release, reason: 'request', auto_restart: true };
  const journal: Journal = {
    v: 1,
    kind: 'rollback',
    job,
    from_version: last.release.version,
    target_version: last.from_version,
    images: Object.fromEntries(last.services.map((s) => [s.service, s.imageId])),
    reason: `operator request${request.source ? ` from ${request.source}` : ''}${backup ? `, data restored from ${backup.id}` : ', data kept as it was'}`,
    started_at: new Date(started).toISOString(),
    steps: plan.map((step) => ({ ...step, status: 'pending' as const })),
    swaps: [],
  };
  await execute(
    deps,
    journal,
    `rolling back ${last.release.component} ${last.release.version} to ${last.from_version}`,
  );
  return {
    outcome: 'rolled_back',
    services: journal.swaps.map((s) => s.service),
    ...(backup ? { backup_id: backup.id } : {}),
  };
}

/**
 * The backup a rollback restores: the one named, else the one the undone install took; none with
 * keep_data. A named backup must be of the component and of the version the rollback returns to (data
 * of another version would be a downgrade the old version cannot read).
 */
async function backupToRestore(
  deps: InstallDeps,
  request: RollbackRequest,
  last: NonNullable<Awaited<ReturnType<InstallDeps['state']['lastInstall']>>>,
): Promise<Backup | undefined> {
  if (request.keep_data) return undefined;
  const id = request.backup_id ?? last.backup_id;
  if (!id) return undefined;
  const backup = await deps.backups.read(id);
  const listKnown = async () =>
    (await deps.backups.list())
      .filter((b) => b.component === request.component)
      .map((b) => `${b.id} (of ${b.from_version})`)
      .join(', ') || 'none';
  if (!backup || backup.component !== request.component) {
    throw new InstallFailed(
      'BACKUP_NOT_FOUND',
      `backup ${id} of ${request.component} does not exist${request.backup_id ? '' : ' (the one the last install took)'}; known backups: ${await listKnown()}. Roll back with keep_data to restore only the containers. Nothing was changed`,
      false,
    );
  }
  if (last.from_version && backup.from_version !== last.from_version) {
    throw new InstallFailed(
      'BACKUP_NOT_FOR_VERSION',
      `backup ${id} holds the data of ${request.component} ${backup.from_version}, and the rollback returns to ${last.from_version}; name a backup of ${last.from_version} (known: ${await listKnown()}). Nothing was changed`,
      false,
    );
  }
  return backup;
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
