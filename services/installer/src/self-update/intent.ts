import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  installJobSchema,
  type Logger,
  releaseRefSchema,
  semverString,
  UPDATER_SERVICES,
} from '@aico-update/shared';
import { z } from 'zod';
import { OwnFile } from '../adapters/own-file.ts';

/*
 * The durable intent of a self-update: one file on the installer's volume, shared by the installer that
 * starts the swap, the helper container that does it, and whichever installer runs afterwards. Only
 * these (the installer's code, on the installer's volume) write it: the installer writes it before the
 * helper starts and once more to mark it reported; in between the helper alone writes it, atomically,
 * before and after every step. Read back through its schema: what the helper acts on is the containers
 * and the verified image ids the installer wrote.
 */

const imageId = z.string().regex(/^sha256:[0-9a-f]{64}$/);
const containerName = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/);

export const selfUpdateServiceSchema = z.object({
  service: z.enum(UPDATER_SERVICES),
  container: containerName,
  old_image_id: imageId,
  new_image_id: imageId,
  /** The tag the deployment names (compose's `aico-update/<service>:<tag>`), moved with the swap. */
  ref: z.string().max(300).optional(),
});
export type SelfUpdateService = z.infer<typeof selfUpdateServiceSchema>;

export const SELF_UPDATE_PHASES = ['started', 'swapping', 'rolling_back', 'finished'] as const;

export const selfUpdateStepSchema = z.object({
  step: z.enum(['swap', 'health-gate', 'roll-back', 'commit']),
  service: z.string().max(100),
  status: z.enum(['started', 'done', 'failed']),
  at: z.iso.datetime(),
  ms: z.number().nonnegative().optional(),
  detail: z.string().max(2000).optional(),
});
export type SelfUpdateStep = z.infer<typeof selfUpdateStepSchema>;

export const selfUpdateOutcomeSchema = z.object({
  /** committed: every service runs the new version; rolled_back: every one the old; failed: not all back. */
  result: z.enum(['committed', 'rolled_back', 'failed']),
  reason: z.string().max(4000),
  at: z.iso.datetime(),
});
export type SelfUpdateOutcome = z.infer<typeof selfUpdateOutcomeSchema>;

export const selfUpdateIntentSchema = z.object({
  v: z.literal(1),
  id: z.string().regex(/^[a-z0-9.-]{1,100}$/),
  release: releaseRefSchema,
  reason: z.enum(['request', 'auto_install', 'critical']),
  from_version: semverString.optional(),
  /** The helper container's name (deterministic: one helper per deployment, never a random name). */
  helper: containerName,
  /** In swap order (UPDATER_SERVICES): the installer last. */
  services: z.array(selfUpdateServiceSchema).min(1),
  health_timeout_ms: z.number().int().positive(),
  soak_ms: z.number().int().nonnegative(),
  /** A backend install that waits for this self-update (it needs the newer updater): queued once committed. */
  next_install: installJobSchema.optional(),
  started_at: z.iso.datetime(),
  phase: z.enum(SELF_UPDATE_PHASES),
  /** Services whose swap began, written before anything of theirs is renamed or retagged. */
  swapped: z.array(z.enum(UPDATER_SERVICES)),
  steps: z.array(selfUpdateStepSchema).max(200),
  /** How many times a helper was started for this intent (a crashed helper is started again, up to a limit). */
  helper_starts: z.number().int().nonnegative(),
  outcome: selfUpdateOutcomeSchema.optional(),
  /** Set by the installer that reported the outcome (history, events, state). */
  reported_at: z.iso.datetime().optional(),
});
export type SelfUpdateIntent = z.infer<typeof selfUpdateIntentSchema>;

export const INTENT_FILE = 'self-update.json';
const LAST_FILE = 'self-update-last.json';

export class IntentStore {
  readonly #file: OwnFile<z.ZodOptional<typeof selfUpdateIntentSchema>>;
  readonly #last: OwnFile<z.ZodOptional<typeof selfUpdateIntentSchema>>;
  readonly #dir: string;
  #startingHelper = false;

  constructor(stateDir: string, logger: Logger) {
    this.#dir = stateDir;
    const options = { schema: selfUpdateIntentSchema.optional(), empty: () => undefined, logger };
    this.#file = new OwnFile(join(stateDir, INTENT_FILE), { ...options, what: 'the self-update intent' });
    this.#last = new OwnFile(join(stateDir, LAST_FILE), { ...options, what: 'the last self-update' });
  }

  get path(): string {
    return join(this.#dir, INTENT_FILE);
  }

  read(): Promise<SelfUpdateIntent | undefined> {
    return this.#file.read();
  }

  /**
   * True while this process is starting the helper of an intent it just wrote: the watch must not take
   * the missing helper for a dead one and start a second (two starts under one name race in the engine).
   * In memory on purpose: after a crash nobody is starting it, and the watch's restart is the recovery.
   */
  get startingHelper(): boolean {
    return this.#startingHelper;
  }

  async whileStartingHelper<T>(start: () => Promise<T>): Promise<T> {
    this.#startingHelper = true;
    try {
      return await start();
    } finally {
      this.#startingHelper = false;
    }
  }

  write(intent: SelfUpdateIntent): Promise<void> {
    return this.#file.write(intent);
  }

  /** The last reported self-update, for status. */
  last(): Promise<SelfUpdateIntent | undefined> {
    return this.#last.read();
  }

  /** A reported intent moves aside (kept as the last one): the next self-update starts clean. */
  async archive(intent: SelfUpdateIntent): Promise<void> {
    await this.#file.write(intent);
    await rename(this.path, join(this.#dir, LAST_FILE));
  }

  async clear(): Promise<void> {
    await rm(this.path, { force: true });
  }
}

/** An intent still in the hands of a helper: no other install may run meanwhile. */
export function isActive(intent: SelfUpdateIntent | undefined): intent is SelfUpdateIntent {
  return intent !== undefined && intent.reported_at === undefined;
}

export function stepOf(
  step: SelfUpdateStep['step'],
  service: string,
  status: SelfUpdateStep['status'],
  extra: { ms?: number; detail?: string } = {},
): SelfUpdateStep {
  return { step, service, status, at: new Date().toISOString(), ...extra };
}
