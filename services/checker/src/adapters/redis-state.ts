import {
  type CheckResponse,
  type Component,
  type Decision,
  type ReleaseHold,
  readInstallerStatus,
  readLastCheck,
  recordDecision,
  StateKeys,
} from '@aico-update/shared';
import type { Redis } from 'ioredis';
import type { CheckState, InstalledVersions } from '../domain/ports.ts';

const ANNOUNCED_KEY = 'aico-update:announced';

/** Installed versions and check state in Redis, shared by every replica and (later) the installer. */
export class RedisCheckState implements CheckState, InstalledVersions {
  readonly #redis: Redis;

  constructor(redis: Redis) {
    this.#redis = redis;
  }

  /** Seeds versions for components that have none recorded; never overwrites what the installer wrote. */
  async seedInstalled(versions: Readonly<Record<string, string>>): Promise<void> {
    for (const [component, version] of Object.entries(versions)) {
      await this.#redis.hsetnx(StateKeys.installed, component, version);
    }
  }

  async get(): Promise<Partial<Record<Component, string>>> {
    return (await this.#redis.hgetall(StateKeys.installed)) as Partial<Record<Component, string>>;
  }

  async markAnnounced(
    release: { component: string; version: string },
    what: 'available' | 'waits_for_backend' | 'strands_devices' = 'available',
  ): Promise<boolean> {
    const key = `${release.component}@${release.version}`;
    // "available" keeps the members it always had, so nothing is announced twice across an upgrade.
    return (await this.#redis.sadd(ANNOUNCED_KEY, what === 'available' ? key : `${what}:${key}`)) === 1;
  }

  async saveLastCheck(response: CheckResponse): Promise<void> {
    await this.#redis.set(StateKeys.lastCheck, JSON.stringify(response));
  }

  lastCheck(): Promise<CheckResponse | undefined> {
    return readLastCheck(this.#redis);
  }

  async holds(): Promise<ReleaseHold[]> {
    return (await readInstallerStatus(this.#redis))?.holds ?? [];
  }

  async decide(entry: Omit<Decision, 'at' | 'service'>): Promise<void> {
    await recordDecision(this.#redis, 'checker', entry);
  }
}
