import type {
  CheckResponse,
  Component,
  Decision,
  DownloadJob,
  EventSink,
  ReleaseHold,
  ReleaseManifest,
} from '@aico-update/shared';

export type { EventSink };

import type { ReleaseCandidate } from './select-release.ts';

/** Signed releases from the update server; throws a classified TufError when they cannot be trusted. */
export interface ReleaseSource {
  withReleases<T>(
    use: (
      releases: ReleaseCandidate[],
      verifyManifest: (release: ReleaseCandidate) => Promise<ReleaseManifest>,
    ) => Promise<T>,
  ): Promise<T>;
  /** Each top-level role's expiry in the locally trusted metadata, if any is trusted yet. */
  trustedExpiries(): Promise<Record<string, Date> | undefined>;
}

export interface InstalledVersions {
  get(): Promise<Partial<Record<Component, string>>>;
}

export interface CheckState {
  /** True the first time a release is announced; false when it was announced before. */
  markAnnounced(
    release: { component: string; version: string },
    what?: 'available' | 'waits_for_backend' | 'strands_devices',
  ): Promise<boolean>;
  saveLastCheck(response: CheckResponse): Promise<void>;
  lastCheck(): Promise<CheckResponse | undefined>;
  /** Releases the installer holds back (quarantined, skipped): its copy, shown and not offered. */
  holds(): Promise<ReleaseHold[]>;
  /** One of the checker's decisions, into the shared history. */
  decide(entry: Omit<Decision, 'at' | 'service'>): Promise<void>;
}

export interface DownloadQueue {
  /** Idempotent per release: a second enqueue of the same release is a no-op. */
  enqueue(job: DownloadJob): Promise<void>;
}

export interface Clock {
  now(): Date;
}
