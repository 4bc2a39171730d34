import { join } from 'node:path';
import {
  COMPONENTS,
  type Component,
  type Logger,
  type PausedComponent,
  pausedComponentSchema,
  type ReleaseHold,
  type ReleasePointer,
  releaseHoldSchema,
} from '@aico-update/shared';
import semver from 'semver';
import { z } from 'zod';
import { OwnFile } from './own-file.ts';

/*
 * What the installer will not install by itself, on its own volume: releases quarantined after a
 * rollback and releases the user skipped (an operator naming the version may still install them), and
 * the circuit breaker: after N failed automatic installs of a component within a period, its automatic
 * installs pause until an operator resumes them. Only the installer writes here; Redis gets a copy.
 */

const holdsSchema = z.object({
  v: z.literal(1),
  holds: z.array(releaseHoldSchema).default([]),
  /** Failed automatic installs per component (ISO times), the breaker's memory. */
  failures: z.partialRecord(z.enum(COMPONENTS), z.array(z.iso.datetime())).default({}),
  paused: z.array(pausedComponentSchema).default([]),
});
type Holds = z.infer<typeof holdsSchema>;

export interface BreakerPolicy {
  /** Failed automatic installs that open the breaker (0: never). */
  failures: number;
  periodMs: number;
}

export class ReleaseHolds {
  readonly #store: OwnFile<typeof holdsSchema>;
  readonly breaker: BreakerPolicy;

  constructor(stateDir: string, breaker: BreakerPolicy, logger: Logger) {
    this.#store = new OwnFile(join(stateDir, 'holds.json'), {
      schema: holdsSchema,
      empty: () => ({ v: 1, holds: [], failures: {}, paused: [] }),
      logger,
      what: 'the holds file',
    });
    this.breaker = breaker;
  }

  async holds(): Promise<ReleaseHold[]> {
    return (await this.#read()).holds;
  }

  async holdOf(release: ReleasePointer): Promise<ReleaseHold | undefined> {
    return (await this.#read()).holds.find(
      (h) => h.component === release.component && h.version === release.version,
    );
  }

  async paused(): Promise<PausedComponent[]> {
    return (await this.#read()).paused;
  }

  async pausedOf(component: Component): Promise<PausedComponent | undefined> {
    return (await this.#read()).paused.find((p) => p.component === component);
  }

  /** Puts a release on hold (a new reason replaces an older one). */
  async hold(hold: Omit<ReleaseHold, 'at'>, now = new Date()): Promise<ReleaseHold> {
    const state = await this.#read();
    const entry = releaseHoldSchema.parse({ ...hold, at: now.toISOString() });
    state.holds = [...state.holds.filter((h) => !sameRelease(h, hold)), entry];
    await this.#write(state);
    return entry;
  }

  /** Takes a hold back; the hold removed, if there was one. */
  async release(release: ReleasePointer, kind?: ReleaseHold['kind']): Promise<ReleaseHold | undefined> {
    const state = await this.#read();
    const found = state.holds.find((h) => sameRelease(h, release) && (!kind || h.kind === kind));
    if (!found) return undefined;
    state.holds = state.holds.filter((h) => h !== found);
    await this.#write(state);
    return found;
  }

  /** A release of the component installed: its holds and those of older versions no longer matter. */
  async installed(release: ReleasePointer): Promise<void> {
    const state = await this.#read();
    const kept = state.holds.filter(
      (h) =>
        h.component !== release.component ||
        !semver.valid(h.version) ||
        semver.gt(h.version, release.version),
    );
    if (kept.length === state.holds.length) return;
    state.holds = kept;
    await this.#write(state);
  }

  /**
   * Counts a failed automatic install; returns the pause when this failure opened the breaker (the
   * failures within the period reached the limit).
   */
  async automaticFailed(
    component: Component,
    reason: string,
    now = new Date(),
  ): Promise<PausedComponent | undefined> {
    if (this.breaker.failures <= 0) return undefined;
    const state = await this.#read();
    const since = now.getTime() - this.breaker.periodMs;
    const failures = [...(state.failures[component] ?? []), now.toISOString()].filter(
      (at) => Date.parse(at) >= since,
    );
    state.failures[component] = failures;
    let opened: PausedComponent | undefined;
    if (failures.length >= this.breaker.failures && !state.paused.some((p) => p.component === component)) {
      opened = { component, since: now.toISOString(), failures: failures.length, reason };
      state.paused.push(opened);
    }
    await this.#write(state);
    return opened;
  }

  /** An operator resumed automatic installs: the breaker closes and forgets the failures. */
  async resume(component: Component): Promise<PausedComponent | undefined> {
    const state = await this.#read();
    const paused = state.paused.find((p) => p.component === component);
    state.paused = state.paused.filter((p) => p.component !== component);
    delete state.failures[component];
    await this.#write(state);
    return paused;
  }

  async #read(): Promise<Holds> {
    return this.#store.read();
  }

  async #write(state: Holds): Promise<void> {
    await this.#store.write(state);
  }
}

function sameRelease(a: ReleasePointer, b: ReleasePointer): boolean {
  return a.component === b.component && a.version === b.version;
}
