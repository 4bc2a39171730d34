import type {
  CheckResponse,
  Decision,
  DownloadJob,
  ReleaseHold,
  ReleaseManifest,
  ReleaseRef,
  Topic,
} from '@aico-update/shared';
import { strictFake } from '@aico-update/shared/testing';
import type {
  CheckState,
  DownloadQueue,
  EventSink,
  InstalledVersions,
  ReleaseSource,
} from '../../src/domain/ports.ts';

/*
 * In-memory fakes of the checker's ports for unit tests. Each implements exactly what it declares;
 * strictFake makes any other property access throw, so a fake never silently accepts a call it does not know.
 */
export function release(overrides: Partial<ReleaseRef> & Pick<ReleaseRef, 'version'>): ReleaseRef {
  const component = overrides.component ?? 'backend';
  return {
    component,
    channel: 'stable',
    critical: false,
    notes: '',
    released_at: '2026-01-01T00:00:00Z',
    size_bytes: 100,
    target: { path: `releases/${component}/${overrides.version}.json`, length: 10, sha256: 'a'.repeat(64) },
    ...overrides,
  };
}

export function fakeSource(
  releases: ReleaseRef[],
  options: { fail?: Error; manifest?: (r: ReleaseRef) => ReleaseManifest } = {},
) {
  const verified: string[] = [];
  const source: ReleaseSource = {
    async withReleases(use) {
      if (options.fail) throw options.fail;
      return use(releases, async (r) => {
        verified.push(`${r.component}@${r.version}`);
        return options.manifest?.(r) ?? { ...r, schema: 1, artifacts: [], images: [] };
      });
    },
    async trustedExpiries() {
      return { timestamp: new Date('2027-01-01T00:00:00Z') };
    },
  };
  return { source: strictFake('ReleaseSource', source), verified };
}

export function fakeInstalled(versions: Record<string, string>): InstalledVersions {
  return strictFake('InstalledVersions', { get: async () => versions });
}

export class FakeState implements CheckState {
  announced = new Set<string>();
  last: CheckResponse | undefined;
  async markAnnounced(r: { component: string; version: string }, what = 'available') {
    const key = `${what}:${r.component}@${r.version}`;
    const first = !this.announced.has(key);
    this.announced.add(key);
    return first;
  }
  async saveLastCheck(response: CheckResponse) {
    this.last = response;
  }
  async lastCheck() {
    return this.last;
  }
  heldBack: ReleaseHold[] = [];
  decisions: Omit<Decision, 'at' | 'service'>[] = [];
  async holds() {
    return this.heldBack;
  }
  async decide(entry: Omit<Decision, 'at' | 'service'>) {
    this.decisions.push(entry);
  }
}

export class FakeEvents implements EventSink {
  published: { topic: Topic; payload: unknown; dedupId: string | undefined }[] = [];
  async publish(topic: Topic, payload: unknown, dedupId?: string) {
    this.published.push({ topic, payload, dedupId });
  }
  of(topic: Topic) {
    return this.published.filter((p) => p.topic === topic).map((p) => p.payload);
  }
}

export class FakeDownloads implements DownloadQueue {
  jobs: DownloadJob[] = [];
  async enqueue(job: DownloadJob) {
    if (
      !this.jobs.some(
        (j) => j.release.component === job.release.component && j.release.version === job.release.version,
      )
    ) {
      this.jobs.push(job);
    }
  }
}
