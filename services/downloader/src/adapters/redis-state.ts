import { type Component, type DownloadedRecord, type ReleaseRef, StateKeys } from '@aico-update/shared';
import type { Redis } from 'ioredis';

/** Which releases are downloaded and verified, and which versions are installed (the installer's). */
export class DownloadState {
  readonly #redis: Redis;

  constructor(redis: Redis) {
    this.#redis = redis;
  }

  async installed(): Promise<Partial<Record<Component, string>>> {
    return (await this.#redis.hgetall(StateKeys.installed)) as Partial<Record<Component, string>>;
  }

  async isDownloaded(release: {
    component: string;
    version: string;
    target: { sha256: string };
  }): Promise<boolean> {
    const raw = await this.#redis.hget(StateKeys.downloaded, `${release.component}@${release.version}`);
    return (
      raw !== null &&
      (JSON.parse(raw) as { manifest_sha256: string }).manifest_sha256 === release.target.sha256
    );
  }

  async markDownloaded(release: ReleaseRef): Promise<void> {
    await this.#redis.hset(
      StateKeys.downloaded,
      `${release.component}@${release.version}`,
      JSON.stringify({
        manifest_sha256: release.target.sha256,
        completed_at: new Date().toISOString(),
        release,
      } satisfies DownloadedRecord),
    );
  }

  async forget(component: string, version: string): Promise<void> {
    await this.#redis.hdel(StateKeys.downloaded, `${component}@${version}`);
  }
}
