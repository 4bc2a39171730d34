import {
  type Component,
  type InstallerStatus,
  installJobSchema,
  type ReleasePointer,
  type ScheduledInstall,
  StateKeys,
} from '@aico-update/shared';
import type { SelfUpdateIntent } from '../self-update/intent.ts';
import { decide } from './history.ts';
import type { InstallDeps } from './install-release.ts';

/*
 * Quarantine, the circuit breaker and the copy of the installer's holds and schedule in Redis (what the
 * checker leaves out of its offers and the control API shows). The installer decides from its own
 * volume; the copy is only ever shown.
 */

/** A release that was rolled back is quarantined: reported as such, never installed by itself again. */
export async function quarantine(
  deps: InstallDeps,
  release: ReleasePointer,
  code: string,
  reason: string,
): Promise<void> {
  await deps.holds.hold({ ...release, kind: 'quarantined', code, reason });
  deps.logger.warn({ ...release, code }, `quarantined ${release.component} ${release.version}: ${reason}`);
  await decide(deps, 'quarantined', release, {
    code,
    reason: `rolled back (${code}); not installed automatically again, and not offered: ${reason}`,
  });
  await publishInstallerStatus(deps);
}

/** Counts a failed automatic install; the breaker may open and pause automatic installs of the component. */
export async function countAutomaticFailure(
  deps: InstallDeps,
  release: ReleasePointer,
  reason: string,
): Promise<void> {
  const opened = await deps.holds.automaticFailed(release.component, reason);
  if (!opened) return;
  deps.logger.error(
    { component: release.component, failures: opened.failures },
    `automatic installs of ${release.component} paused after ${opened.failures} failures`,
  );
  await decide(deps, 'circuit_open', release, {
    code: 'CIRCUIT_OPEN',
    reason: `${opened.failures} automatic installs of ${release.component} failed within ${deps.holds.breaker.periodMs / 3_600_000} h (the last: ${reason}); automatic installs of it are paused until an operator resumes them`,
  });
  await publishInstallerStatus(deps);
}

/** The installer's holds and schedule, copied to Redis; the gauges follow. Never throws. */
export async function publishInstallerStatus(deps: InstallDeps): Promise<InstallerStatus | undefined> {
  try {
    const [holds, paused, schedule, backups, selfUpdate] = await Promise.all([
      deps.holds.holds(),
      deps.holds.paused(),
      scheduledInstalls(deps),
      deps.backups.list(),
      deps.intents.read().then(async (intent) => intent ?? (await deps.intents.last())),
    ]);
    const status: InstallerStatus = {
      v: 1,
      updated_at: new Date().toISOString(),
      holds,
      paused,
      schedule,
      backups: backups.map((b) => ({
        id: b.id,
        component: b.component,
        from_version: b.from_version,
        to_version: b.to_version,
        created_at: b.created_at,
        bytes: [...b.entries, ...b.hooks].reduce((sum, e) => sum + e.bytes, 0),
      })),
      ...(selfUpdate ? { self_update: selfUpdateStatus(selfUpdate) } : {}),
    };
    await deps.redis.set(StateKeys.installerStatus, JSON.stringify(status));
    deps.metrics.paused.reset();
    for (const p of paused) deps.metrics.paused.set({ component: p.component }, 1);
    deps.metrics.held.reset();
    for (const kind of ['quarantined', 'skipped'] as const) {
      deps.metrics.held.set({ kind }, holds.filter((h) => h.kind === kind).length);
    }
    return status;
  } catch (error) {
    deps.logger.warn({ err: error }, 'could not copy the installer status to Redis');
    return undefined;
  }
}

/** A self-update as status shows it: where the helper is, and how it ended. */
function selfUpdateStatus(intent: SelfUpdateIntent): NonNullable<InstallerStatus['self_update']> {
  const step = intent.steps.at(-1);
  return {
    version: intent.release.version,
    ...(intent.from_version ? { from_version: intent.from_version } : {}),
    phase: intent.reported_at ? 'reported' : intent.phase,
    started_at: intent.started_at,
    services: intent.services.map((s) => s.service),
    ...(step ? { step: { step: step.step, service: step.service, status: step.status } } : {}),
    ...(intent.outcome ? { outcome: intent.outcome } : {}),
    ...(intent.next_install ? { next_install: intent.next_install.release } : {}),
  };
}

/** Installs waiting in the queue for a time (picked by an operator, or the window), soonest first. */
export async function scheduledInstalls(
  deps: Pick<InstallDeps, 'queue'>,
  component?: Component,
): Promise<(ScheduledInstall & { state: string })[]> {
  const jobs = await deps.queue.getJobs(['delayed', 'waiting', 'prioritized']);
  const out: (ScheduledInstall & { state: string })[] = [];
  for (const job of jobs) {
    if (job.name !== 'install' || !job.id) continue;
    const parsed = installJobSchema.safeParse(job.data);
    if (!parsed.success) continue;
    if (component && parsed.data.release.component !== component) continue;
    const at = parsed.data.scheduled_for ?? new Date(job.timestamp + (job.opts.delay ?? 0)).toISOString();
    out.push({
      ...parsed.data.release,
      scheduled_for: at,
      reason: parsed.data.reason,
      job_id: job.id,
      state: await job.getState(),
    });
  }
  return out.sort((a, b) => a.scheduled_for.localeCompare(b.scheduled_for));
}
