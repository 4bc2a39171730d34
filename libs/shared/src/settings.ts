import type { NatsConnection } from '@nats-io/transport-node';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { explainIssues, type UpdatePolicy, updatePolicyFields } from './config.ts';
import { parseJsonOrUndefined } from './files.ts';
import type { Logger } from './logger.ts';
import { ExtraTopics, StateKeys, Subjects } from './topics.ts';

/*
 * The user's settings: the `update.*` policy as a frontend (AICO's UpdateSettings) or the control API
 * sets it. The installer owns them (a file on its own volume, because its policy decides what installs
 * by itself); every change is validated like the config file, kept, copied to Redis and announced as an
 * `update.settings` event, and each service applies it at once. Precedence, lowest first: the schema's
 * defaults, the config file, the environment, then what the user set. A reset drops the user's value.
 */

type PolicyKey = keyof typeof updatePolicyFields;
export type SettingKey = PolicyKey;
export const SETTING_KEYS = Object.keys(updatePolicyFields) as PolicyKey[];

/** What a user may set: any of the policy keys, each validated as the config file validates it. */
export const settingsChangeSchema = z.strictObject(
  Object.fromEntries(SETTING_KEYS.map((key) => [key, updatePolicyFields[key].unwrap().optional()])) as {
    [K in PolicyKey]: z.ZodOptional<ReturnType<(typeof updatePolicyFields)[K]['unwrap']>>;
  },
);
export type SettingsChange = z.output<typeof settingsChangeSchema>;

/** The description of each key (what is allowed), for error messages. */
const describedChangeSchema = z.strictObject(
  Object.fromEntries(SETTING_KEYS.map((key) => [key, updatePolicyFields[key].optional()])),
);

/** Parses a change, or says for every bad field what it is and what is allowed. */
export function parseSettingsChange(
  raw: unknown,
): { ok: true; change: SettingsChange } | { ok: false; problems: string[] } {
  const input = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? raw : {};
  const parsed = settingsChangeSchema.safeParse(input);
  if (parsed.success) return { ok: true, change: parsed.data };
  return {
    ok: false,
    problems: explainIssues(describedChangeSchema, input as Record<string, unknown>, parsed.error).map(
      (problem) => (problem.startsWith('(top level)') ? `update${problem.slice(11)}` : `update.${problem}`),
    ),
  };
}

const effectiveSchema = z.strictObject(
  Object.fromEntries(SETTING_KEYS.map((key) => [key, updatePolicyFields[key].unwrap()])) as {
    [K in PolicyKey]: ReturnType<(typeof updatePolicyFields)[K]['unwrap']>;
  },
);

/** The settings as the installer keeps and announces them (the Redis copy and the event carry this). */
export const settingsStateSchema = z.object({
  v: z.literal(1),
  /** Grows by one with each change: a service ignores an announcement older than what it applied. */
  revision: z.number().int().nonnegative(),
  updated_at: z.iso.datetime(),
  source: z.string().max(200),
  /** What the user set (wins over the configuration). */
  overrides: settingsChangeSchema,
  /** What is in force: the configuration's values overlaid by the overrides. */
  effective: effectiveSchema,
});
export type SettingsState = z.infer<typeof settingsStateSchema>;

/** Internal command `update.settings`: read (no `set`), change, or reset keys to the configuration's. */
export const settingsRequestSchema = z.object({
  v: z.literal(1).default(1),
  request_id: z.string().max(200).optional(),
  /** Validated by parseSettingsChange, so that a bad value is refused naming its key. */
  set: z.record(z.string().max(100), z.unknown()).optional(),
  /** Keys to give back to the configuration (true: all). */
  reset: z.union([z.literal(true), z.array(z.enum(SETTING_KEYS as [PolicyKey, ...PolicyKey[]]))]).optional(),
  source: z.string().max(200).optional(),
});
export type SettingsRequest = z.infer<typeof settingsRequestSchema>;

export const settingsReplySchema = z.object({
  v: z.literal(1),
  request_id: z.string().optional(),
  accepted: z.boolean(),
  message: z.string(),
  code: z.string().optional(),
  settings: settingsStateSchema,
});
export type SettingsReply = z.infer<typeof settingsReplySchema>;

/** The configuration overlaid by the user's overrides. */
export function effectiveSettings(defaults: UpdatePolicy, overrides: SettingsChange): UpdatePolicy {
  const defined = Object.entries(overrides).filter(([, value]) => value !== undefined);
  return { ...defaults, ...Object.fromEntries(defined) };
}

/**
 * A service's view of the settings: starts from its configuration, takes the installer's copy in Redis
 * at start and every `update.settings` event after, and applies each to `policy` in place (the object
 * the service's handlers hold), so a change is in force at once. What Redis or NATS carries is parsed
 * with the schema; a value that does not fit is ignored and logged.
 */
export class LiveSettings {
  readonly policy: UpdatePolicy;
  readonly #defaults: UpdatePolicy;
  readonly #logger: Logger;
  readonly #listeners: ((policy: UpdatePolicy, previous: UpdatePolicy) => void)[] = [];
  #revision = -1;
  #state: SettingsState | undefined;

  constructor(defaults: UpdatePolicy, logger: Logger) {
    this.#defaults = { ...defaults };
    this.policy = { ...defaults };
    this.#logger = logger;
  }

  get state(): SettingsState | undefined {
    return this.#state;
  }

  /** Called after each change that altered a value, with the new and the previous policy. */
  onChange(listener: (policy: UpdatePolicy, previous: UpdatePolicy) => void): void {
    this.#listeners.push(listener);
  }

  /** Reads the copy in Redis, then follows the announcements; returns the unsubscribe. */
  async follow(redis: Redis, nc: NatsConnection): Promise<() => void> {
    const subscription = nc.subscribe(Subjects.event(ExtraTopics.settings), {
      callback: (_error, message) => {
        this.apply(parseJsonOrUndefined(message.string()), 'event');
      },
    });
    const stored = await redis.get(StateKeys.settings).catch(() => null);
    if (stored !== null) this.apply(parseJsonOrUndefined(stored), 'redis');
    return () => subscription.unsubscribe();
  }

  /** Applies a settings state (from Redis, an event, or the owner itself); false when ignored. */
  apply(raw: unknown, from: string): boolean {
    const parsed = settingsStateSchema.safeParse(raw);
    if (!parsed.success) {
      this.#logger.warn(
        { from, issues: parsed.error.issues.slice(0, 5) },
        'ignored settings that do not fit their schema',
      );
      return false;
    }
    if (parsed.data.revision <= this.#revision) return false;
    this.#revision = parsed.data.revision;
    this.#state = parsed.data;
    const previous = { ...this.policy };
    // Only what the user set is taken: each service keeps its own configuration under it.
    Object.assign(this.policy, effectiveSettings(this.#defaults, parsed.data.overrides));
    const changed = SETTING_KEYS.filter((key) => previous[key] !== this.policy[key]);
    if (changed.length > 0) {
      this.#logger.info(
        {
          from,
          revision: parsed.data.revision,
          changed: Object.fromEntries(changed.map((k) => [k, this.policy[k]])),
        },
        'settings changed',
      );
      for (const listener of this.#listeners) listener(this.policy, previous);
    }
    return true;
  }
}
