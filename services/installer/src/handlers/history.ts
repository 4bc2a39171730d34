import { type EventSink, type ReleasePointer, StateKeys, Topics } from '@aico-update/shared';
import type { Redis } from 'ioredis';
import type { InstallOrder } from '../domain/install-policy.ts';
import { type InstallerMetrics, showInstalledVersion } from '../metrics.ts';

/*
 * The install history (Redis, newest first, for status pages and the control API) and the events and
 * metrics every finished install, rollback or refusal produces.
 */

export const HISTORY_KEY = StateKeys.installHistory;
const HISTORY_LENGTH = 1000;

type HistoryDeps = { redis: Redis; events: EventSink; metrics: InstallerMetrics };

export async function record(
  deps: HistoryDeps,
  job: InstallOrder,
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
  await pushHistory(deps, entry);
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
  deps.metrics.installs.inc({ component: release.component, outcome: 'refused' });
  const entry = {
    component: release.component,
    version: release.version,
    outcome: 'refused',
    code,
    reason: message,
    duration_ms: 0,
    at: new Date().toISOString(),
  };
  await pushHistory(deps, entry);
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

/** Newest first, the newest HISTORY_LENGTH kept. */
async function pushHistory(deps: HistoryDeps, entry: Record<string, unknown>): Promise<void> {
  await deps.redis.lpush(HISTORY_KEY, JSON.stringify(entry));
  await deps.redis.ltrim(HISTORY_KEY, 0, HISTORY_LENGTH - 1);
}
