import {
  type Component,
  type DownloadedRecord,
  downloadedRecordSchema,
  parseJsonOrUndefined,
  type ReleaseRef,
  StateKeys,
} from '@aico-update/shared';
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
    const record = downloadedRecordSchema.safeParse(raw === null ? undefined : parseJsonOrUndefined(raw));
    return record.success && record.data.manifest_sha256 === release.target.sha256;
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
