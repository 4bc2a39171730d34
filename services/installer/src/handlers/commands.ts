import {
  type CommandReply,
  ExtraTopics,
  enqueueInstall,
  type InstallCancel,
  type InstallReason,
  type InstallRequest,
  type InstallResume,
  installJobId,
  type ReleasePointer,
  type ReleaseSkip,
  type RestartScheduled,
  type RollbackRequest,
  recordDecision,
  replies,
  type SettingsReply,
  type SettingsRequest,
  StateKeys,
  Topics,
} from '@aico-update/shared';
import type { Queue } from 'bullmq';
import { InstallFailed } from '../domain/install-failed.ts';
import { decideInstall } from '../domain/install-policy.ts';
import { chooseVersion } from './candidates.ts';
import { expectedDowntime } from './dry-run.ts';
import { decide } from './history.ts';
import { publishInstallerStatus, scheduledInstalls } from './holds.ts';
import { type InstallDeps, installedVersion } from './install-release.ts';

/*
 * Operator commands (from the bus gateway, the control API or any NATS client that may send them). An
 * install request is verified at once against the installer's own trusted metadata (the release is
 * signed now, its cached manifest hashes to it, it is newer than the installed one unless a downgrade is
 * asked for), so the requester learns why a release cannot be installed; then a job sealed by the
 * installer is queued. The worker verifies it again before it runs.
 */

export interface CommandDeps {
  queue: Queue;
  install: InstallDeps;
}

const MAX_SCHEDULE_MS = 30 * 24 * 3600 * 1000;

export async function requestInstall(deps: CommandDeps, request: InstallRequest): Promise<CommandReply> {
  const { ids, refuse } = replies(request);
  const { component } = request;
  const installed = await installedVersion(deps.install, component);
  const chosen = await chooseVersion(deps.install, component, installed, request.version);
  if (!chosen.ok) return refuse(chosen.code, chosen.message);
  const { version } = chosen;
  let release: Awaited<ReturnType<InstallDeps['trust']['verify']>>['release'];
  try {
    ({ release } = await deps.install.trust.verify({ component, version }));
  } catch (error) {
    if (error instanceof InstallFailed) return refuse(error.code, error.message);
    throw error;
  }
  const decision = decideInstall({
    release,
    installed,
    operator: true,
    allowDowngrade: request.allow_downgrade,
    policy: deps.install.policy,
  });
  if (!decision.allowed) return refuse(decision.code, decision.message);
  const now = Date.now();
  const at = request.at ? Date.parse(request.at) : now;
  if (at - now > MAX_SCHEDULE_MS) {
    return refuse('BAD_REQUEST', `at = ${request.at} is more than 30 days ahead; pick a time within 30 days`);
  }
  const later = at > now + 1000;
  if (later && release.critical && deps.install.policy.critical_install) {
    return refuse(
      'CRITICAL_NOT_DEFERRED',
      `${component} ${version} is a critical release and update.critical_install is on: it is installed as soon as it is downloaded, not at a later time. Turn critical_install off to schedule it`,
    );
  }
  const jobId = installJobId({ component, version });
  const existing = await deps.queue.getJob(jobId);
  const existingState = await existing?.getState();
  if (existingState === 'active') {
    return refuse(
      'INSTALL_RUNNING',
      `the install of ${component} ${version} is running now; it cannot be moved`,
    );
  }
  const moved = existingState === 'delayed' || existingState === 'waiting' || existingState === 'prioritized';
  const job = deps.install.seal.seal({
    v: 1,
    release: { component, version },
    reason: 'request',
    ...(request.auto_restart === false ? { auto_restart: false } : {}),
    ...(request.allow_downgrade ? { allow_downgrade: true } : {}),
    ...(later ? { scheduled_for: new Date(at).toISOString() } : {}),
  });
  await enqueueInstall(deps.queue, job, { retry: true, replace: true, delayMs: later ? at - now : 0 });
  const iso = new Date(at).toISOString();
  const change = moved ? 'rescheduled' : 'scheduled';
  const asked = request.source ? ` (asked by ${request.source})` : '';
  const message = moved
    ? `moved the install of ${component} ${version} to ${later ? iso : 'now'}${asked}`
    : `install of ${component} ${version} queued ${later ? `for ${iso}` : 'to run now'}${asked}${installed ? `; installed: ${installed}` : ''}`;
  await announceSchedule(deps.install, release, new Date(at), 'request', change, message);
  await publishInstallerStatus(deps.install);
  return {
    v: 1,
    ...ids,
    accepted: true,
    job_id: jobId,
    scheduled_for: new Date(at).toISOString(),
    message,
  };
}

/** `update.restart.scheduled` for a new, moved or cancelled schedule, and the decision in the history. */
export async function announceSchedule(
  deps: InstallDeps,
  release: ReleasePointer,
  at: Date,
  reason: InstallReason,
  change: 'scheduled' | 'rescheduled' | 'cancelled',
  message: string,
): Promise<void> {
  const services = Object.keys(deps.services);
  const event: RestartScheduled = {
    v: 1,
    component: release.component,
    version: release.version,
    scheduled_for: at.toISOString(),
    reason,
    change,
    message,
    expected_downtime_seconds: (await expectedDowntime(deps, services)).seconds,
  };
  await deps.events.publish(
    Topics.restartScheduled,
    event,
    `restart-scheduled-${release.component}-${release.version}-${change}-${Date.now()}`,
  );
  await decide(deps, change, release, { reason: message, scheduled_for: event.scheduled_for });
}

/** Cancels the scheduled (or queued, not yet running) install of a release, or of every release of a component. */
export async function cancelInstall(deps: CommandDeps, request: InstallCancel): Promise<CommandReply> {
  const { ids } = replies(request);
  const waiting = (await scheduledInstalls(deps, request.component)).filter(
    (s) => !request.version || s.version === request.version,
  );
  if (waiting.length === 0) {
    return {
      v: 1,
      ...ids,
      accepted: false,
      code: 'NOTHING_SCHEDULED',
      message: `no install of ${request.component}${request.version ? ` ${request.version}` : ''} is waiting to run (a running install cannot be cancelled)`,
    };
  }
  for (const scheduled of waiting) {
    await cancelScheduled(
      deps,
      scheduled,
      `cancelled the install of ${scheduled.component} ${scheduled.version} planned for ${scheduled.scheduled_for}${request.source ? ` (asked by ${request.source})` : ''}; it waits for an install request`,
    );
  }
  await publishInstallerStatus(deps.install);
  return {
    v: 1,
    ...ids,
    accepted: true,
    message: `cancelled ${waiting.map((s) => `${s.component} ${s.version} (${s.scheduled_for})`).join(', ')}`,
  };
}

/** Removes an install waiting for its time, and says so (event and history). */
async function cancelScheduled(
  deps: CommandDeps,
  scheduled: Awaited<ReturnType<typeof scheduledInstalls>>[number],
  message: string,
): Promise<void> {
  await (await deps.queue.getJob(scheduled.job_id))?.remove();
  await announceSchedule(
    deps.install,
    scheduled,
    new Date(scheduled.scheduled_for),
    scheduled.reason,
    'cancelled',
    message,
  );
}

/** Skips a release (never installed by itself, not offered) or takes the skip back. */
export async function skipRelease(deps: CommandDeps, request: ReleaseSkip): Promise<CommandReply> {
  const { ids } = replies(request);
  const release = { component: request.component, version: request.version };
  const who = request.source ? ` by ${request.source}` : '';
  if (request.skip) {
    const existing = await deps.install.holds.holdOf(release);
    if (existing?.kind === 'quarantined') {
      return {
        v: 1,
        ...ids,
        accepted: true,
        message: `${request.component} ${request.version} is quarantined already (${existing.reason})`,
      };
    }
    await deps.install.holds.hold({
      ...release,
      kind: 'skipped',
      reason: `skipped${who} at ${new Date().toISOString()}`,
    });
    // A waiting install of it (the window, a schedule) is cancelled with it.
    for (const scheduled of await scheduledInstalls(deps, request.component)) {
      if (scheduled.version !== request.version) continue;
      await cancelScheduled(
        deps,
        scheduled,
        `cancelled: ${request.component} ${request.version} was skipped${who}`,
      );
    }
    await decide(deps.install, 'skipped', release, {
      reason: `the user skipped it${who}; it is not offered or installed by itself`,
    });
  } else {
    const removed = await deps.install.holds.release(release);
    await decide(deps.install, 'unskipped', release, {
      reason: removed
        ? `${removed.kind === 'quarantined' ? 'quarantine lifted' : 'skip taken back'}${who}`
        : `nothing held${who}`,
    });
  }
  await publishInstallerStatus(deps.install);
  return {
    v: 1,
    ...ids,
    accepted: true,
    message: `${request.component} ${request.version} ${request.skip ? 'is skipped' : 'is offered again'}`,
  };
}

/** Closes the circuit breaker: automatic installs of the component run again. */
export async function resumeInstalls(deps: CommandDeps, request: InstallResume): Promise<CommandReply> {
  const { ids } = replies(request);
  const paused = await deps.install.holds.resume(request.component);
  const message = paused
    ? `automatic installs of ${request.component} resumed (paused since ${paused.since} after ${paused.failures} failures)`
    : `automatic installs of ${request.component} were not paused`;
  await decide(
    deps.install,
    'resumed',
    { component: request.component },
    {
      reason: `${message}${request.source ? `; asked by ${request.source}` : ''}`,
    },
  );
  await publishInstallerStatus(deps.install);
  return { v: 1, ...ids, accepted: true, message };
}

/** Reads or changes the user's settings; a change is kept, copied to Redis and announced. */
export async function changeSettings(deps: CommandDeps, request: SettingsRequest): Promise<SettingsReply> {
  const { ids } = replies(request);
  const store = deps.install.settings;
  if (!request.set && !request.reset) {
    return { v: 1, ...ids, accepted: true, message: 'the settings in force', settings: store.state };
  }
  const result = await store.change(request);
  if (!result.ok) {
    return {
      v: 1,
      ...ids,
      accepted: false,
      code: 'INVALID_SETTING',
      message: `settings not changed: ${result.problems.join('; ')}`,
      settings: result.state,
    };
  }
  await publishSettings(deps.install);
  const message =
    result.changed.length > 0
      ? `changed ${result.changed.map((k) => `update.${k} = ${JSON.stringify(result.state.effective[k])}`).join(', ')}`
      : 'nothing changed (the values were already in force)';
  if (result.changed.length > 0) {
    await recordDecision(deps.install.redis, 'installer', {
      kind: 'settings_changed',
      reason: `${message}${request.source ? ` (by ${request.source})` : ''}`,
    });
  }
  return { v: 1, ...ids, accepted: true, message, settings: result.state };
}

/** The settings in force, copied to Redis and announced to every service. */
export async function publishSettings(deps: InstallDeps): Promise<void> {
  const { state } = deps.settings;
  await deps.redis.set(StateKeys.settings, JSON.stringify(state));
  await deps.events.publish(ExtraTopics.settings, state, `settings-${state.revision}-${state.updated_at}`);
}

export async function requestRollback(deps: CommandDeps, request: RollbackRequest): Promise<CommandReply> {
  const { ids } = replies(request);
  if (!(await deps.install.state.lastInstall(request.component))) {
    return {
      v: 1,
      ...ids,
      accepted: false,
      code: 'NOTHING_TO_ROLL_BACK',
      message: `no install of ${request.component} is recorded to roll back (a rollback undoes the last install, once)`,
    };
  }
  const jobId = `rollback-${request.component}-${Date.now()}`;
  await deps.queue.add('rollback', deps.install.seal.sealRollback(request), {
    jobId,
    removeOnComplete: { age: 30 * 24 * 3600 },
    removeOnFail: { age: 30 * 24 * 3600 },
  });
  return { v: 1, ...ids, accepted: true, job_id: jobId, message: `rollback of ${request.component} queued` };
}
