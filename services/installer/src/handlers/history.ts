import {
  type DecisionKind,
  type EventSink,
  type ReleasePointer,
  recordDecision,
  StateKeys,
  Topics,
} from '@aico-update/shared';
import type { Redis } from 'ioredis';
import type { InstallOrder } from '../domain/install-policy.ts';
import { type InstallerMetrics, showInstalledVersion } from '../metrics.ts';

/*
 * The installer's decisions (the shared history of decisions, see decisions.ts) and the events and
 * metrics every finished install, rollback or refusal produces.
 */

export const HISTORY_KEY = StateKeys.installHistory;

export interface StepTiming {
  step: string;
  service: string;
  ms: number;
}

type HistoryDeps = { redis: Redis; events: EventSink; metrics: InstallerMetrics };

export async function record(
  deps: HistoryDeps,
  job: InstallOrder,
  outcome: string,
  durationMs: number,
  reason?: string,
  backupId?: string,
  /** Each step's time, for the history (an install's steps and timings). */
  steps?: readonly StepTiming[],
): Promise<void> {
  const { release } = job;
  deps.metrics.installs.inc({ component: release.component, outcome });
  if (outcome === 'installed')
    deps.metrics.lastSuccess.set({ component: release.component }, Date.now() / 1000);
  if (outcome === 'installed' || outcome === 'already_installed') {
    await deps.redis.hset(StateKeys.installed, release.component, release.version);
    showInstalledVersion(deps.metrics, release.component, release.version);
  }
  await decide(deps, outcome as DecisionKind, release, {
    outcome,
    ...(reason ? { reason } : {}),
    ...(backupId ? { backup_id: backupId } : {}),
    duration_ms: durationMs,
    ...(steps && steps.length > 0 ? { steps } : {}),
  });
  // What runs now (frontends reconnect to it): the installer's own copy of the installed version.
  const running = await deps.redis.hget(StateKeys.installed, release.component);
  await deps.events.publish(Topics.installComplete, {
    v: 1,
    release,
    ...(running ? { running_version: running } : {}),
    success: ['installed', 'already_installed', 'restart_required'].includes(outcome),
    outcome,
    ...(reason ? { reason } : {}),
    ...(backupId ? { backup_id: backupId } : {}),
    duration_ms: durationMs,
  });
}

/**
 * An install job refused before anything was touched (not signed now, not allowed by policy, a forged
 * job): in the history and on the bus with its code, so an operator sees that something asked for it.
 */
export async function recordRefusal(
  deps: HistoryDeps,
  release: ReleasePointer,
  code: string,
  message: string,
): Promise<void> {
  // Held back by the user's or the breaker's choice is not a verification failure (no alert for it).
  const held = ['QUARANTINED', 'SKIPPED', 'CIRCUIT_OPEN', 'STRANDS_DEVICES'].includes(code);
  deps.metrics.installs.inc({ component: release.component, outcome: held ? 'held' : 'refused' });
  await decide(deps, 'refused', release, { outcome: 'refused', code, reason: message, duration_ms: 0 });
  await deps.events.publish(Topics.installComplete, {
    v: 1,
    release,
    success: false,
    outcome: 'refused',
    code,
    reason: message,
    duration_ms: 0,
  });
}

/** One of the installer's decisions about a release, in the shared history. */
export async function decide(
  deps: Pick<HistoryDeps, 'redis'>,
  kind: DecisionKind,
  release: { component: string; version?: string },
  details: { reason?: string; code?: string } & Record<string, unknown> = {},
): Promise<void> {
  await recordDecision(deps.redis, 'installer', {
    kind,
    component: release.component,
    ...(release.version ? { version: release.version } : {}),
    ...details,
  });
}
