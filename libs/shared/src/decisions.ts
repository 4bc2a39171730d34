import type { Redis } from 'ioredis';
import { z } from 'zod';
import { parseJsonOrUndefined } from './files.ts';
import { StateKeys } from './topics.ts';

/*
 * The history of decisions: every choice the system made about a release, with its reason, so an
 * operator can see why something did or did not happen. Each service keeps its own bounded list in Redis
 * (Redis keeps an append-only file: the lists survive restarts), newest first, and writes only its own
 * (the ACL says so); a reader merges them by time. Entries are parsed back with the schema.
 */

export const DECISION_KINDS = [
  // the checker
  'checked',
  'check_failed',
  'waits_for_backend',
  'strands_devices',
  // the downloader
  'downloaded',
  'download_failed',
  'download_requested',
  'waiting_for_user',
  // the installer
  'installed',
  'already_installed',
  'staged',
  'restart_required',
  'rolled_back',
  'failed',
  'refused',
  'held_for_window',
  'scheduled',
  'rescheduled',
  'cancelled',
  'quarantined',
  'circuit_open',
  'resumed',
  'skipped',
  'unskipped',
  'settings_changed',
  'self_update_started',
  'updater_first',
] as const;
export type DecisionKind = (typeof DECISION_KINDS)[number];

export const DECISION_SERVICES = ['checker', 'downloader', 'installer'] as const;
export type DecisionService = (typeof DECISION_SERVICES)[number];

const DECISION_KEYS: Record<DecisionService, string> = {
  checker: StateKeys.checkerDecisions,
  downloader: StateKeys.downloaderDecisions,
  // Its list keeps the name of the install history it grew from, so that history survives an upgrade.
  installer: StateKeys.installHistory,
};

export const decisionSchema = z.looseObject({
  at: z.iso.datetime(),
  /** The service that decided. Older install history entries have none: the installer's. */
  service: z.enum(DECISION_SERVICES).default('installer'),
  /** What was decided. Older install history entries name it `outcome`. */
  kind: z.string().max(50),
  component: z.string().max(50).optional(),
  version: z.string().max(100).optional(),
  reason: z.string().max(4000).optional(),
  code: z.string().max(100).optional(),
});
export type Decision = z.infer<typeof decisionSchema>;

/** How many decisions each service keeps. */
export const DECISIONS_KEPT = 2000;

export async function recordDecision(
  redis: Redis,
  service: DecisionService,
  entry: Omit<Decision, 'at' | 'service'> & Record<string, unknown>,
): Promise<Decision> {
  const decision = { at: new Date().toISOString(), service, ...entry };
  const key = DECISION_KEYS[service];
  await redis
    .multi()
    .lpush(key, JSON.stringify(decision))
    .ltrim(key, 0, DECISIONS_KEPT - 1)
    .exec();
  return decision as Decision;
}

export interface DecisionFilter {
  component?: string | undefined;
  /** Kinds to include; all when empty. */
  kinds?: readonly string[] | undefined;
  service?: DecisionService | undefined;
  /** Only decisions at or after this time. */
  since?: Date | undefined;
  limit: number;
}

/** Every service's decisions merged, newest first, filtered; entries that do not parse are left out. */
export async function readDecisions(redis: Redis, filter: DecisionFilter): Promise<Decision[]> {
  const services = filter.service ? [filter.service] : DECISION_SERVICES;
  const lists = await Promise.all(services.map((s) => redis.lrange(DECISION_KEYS[s], 0, DECISIONS_KEPT - 1)));
  const decisions: Decision[] = [];
  for (const [index, list] of lists.entries()) {
    for (const raw of list) {
      const value = parseJsonOrUndefined(raw) as Record<string, unknown> | undefined;
      const parsed = decisionSchema.safeParse(
        value && typeof value === 'object'
          ? { kind: value.outcome, ...value, service: services[index] }
          : value,
      );
      if (!parsed.success) continue;
      const d = parsed.data;
      if (filter.component && d.component !== filter.component) continue;
      if (filter.kinds?.length && !filter.kinds.includes(d.kind)) continue;
      if (filter.since && Date.parse(d.at) < filter.since.getTime()) continue;
      decisions.push(d);
    }
  }
  return decisions.sort((a, b) => b.at.localeCompare(a.at)).slice(0, filter.limit);
}
