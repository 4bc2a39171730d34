import { type ReleaseManifest, type ReleaseRef, updatePolicySchema } from '@aico-update/shared';
import { describe, expect, it } from 'vitest';
import { diskShortfall, garbage, installReason, planDownload } from '../../src/domain/plan-download.ts';
import { ProgressTracker } from '../../src/domain/progress.ts';

const hex = (c: string) => c.repeat(64);
const blob = (c: string, length: number) => ({
  digest: `sha256:${hex(c)}`,
  length,
  target: `blobs/sha256/${hex(c)}`,
});

function manifest(
  version: string,
  layers: ReturnType<typeof blob>[],
  artifacts: { sha: string; length: number }[] = [],
): ReleaseManifest {
  return {
    schema: 1,
    component: 'backend',
    version,
    channel: 'stable',
    critical: false,
    notes: '',
    released_at: '2026-01-01T00:00:00Z',
    size_bytes: 0,
    artifacts: artifacts.map((a) => ({
      name: a.sha,
      target: `artifacts/backend/${version}/${a.sha}`,
      length: a.length,
      sha256: hex(a.sha),
    })),
    images: [
      { service: 'api', image_id: `sha256:${hex('f')}`, repo_tags: [], config: blob('c', 10), layers },
      {
        service: 'worker',
        image_id: `sha256:${hex('e')}`,
        repo_tags: [],
        config: blob('d', 10),
        layers: [layers[0]!],
      },
    ],
  };
}

describe('planDownload', () => {
  it('needs each file once, and fetches only what the cache lacks', () => {
    const m = manifest('1.1.0', [blob('a', 1000), blob('b', 50)], [{ sha: '1', length: 7 }]);
    const plan = planDownload(m, (sha) => sha === hex('a'));
    expect(plan.all.map((f) => f.sha256).sort()).toEqual(
      [hex('1'), hex('a'), hex('b'), hex('c'), hex('d')].sort(),
    );
    expect(plan.missing.map((f) => f.target).sort()).toEqual(
      [
        'artifacts/backend/1.1.0/1',
        `blobs/sha256/${hex('b')}`,
        `blobs/sha256/${hex('c')}`,
        `blobs/sha256/${hex('d')}`,
      ].sort(),
    );
    expect(plan.missingBytes).toBe(7 + 50 + 10 + 10);
    expect(plan.reusedBytes).toBe(1000);
  });

  it('asks for the missing bytes plus headroom, counting partials already on disk', () => {
    const plan = planDownload(manifest('1.1.0', [blob('a', 1000)]), () => false);
    expect(plan.missingBytes).toBe(1020);
    expect(diskShortfall(plan, 0, 2000, 500)).toBe(0);
    expect(diskShortfall(plan, 0, 1000, 500)).toBe(520);
    expect(diskShortfall(plan, 400, 1000, 500)).toBe(120);
  });
});

describe('installReason', () => {
  const release = (critical: boolean) => ({ critical }) as ReleaseRef;
  it.each([
    [true, { critical_install: true }, 'critical'],
    [true, { critical_install: false, auto_install: true }, undefined],
    [false, { auto_install: true }, 'auto_install'],
    [false, { auto_install: false }, undefined],
  ] as const)('critical %s with %o → %s', (critical, policy, expected) => {
    expect(installReason(release(critical), updatePolicySchema.parse(policy))).toBe(expected);
  });
});

describe('garbage', () => {
  it('deletes only blobs no kept release needs', () => {
    const kept = [manifest('1.1.0', [blob('a', 1)]), manifest('1.2.0', [blob('b', 1)])];
    expect(garbage([hex('a'), hex('b'), hex('c'), hex('d'), hex('9')], kept)).toEqual([hex('9')]);
  });
});

describe('ProgressTracker', () => {
  it('reports percent, rate and ETA from the signed total, at most once per interval', () => {
    let now = 0;
    const tracker = new ProgressTracker({
      component: 'backend',
      version: '1.1.0',
      totalBytes: 1000,
      intervalMs: 250,
      now: () => now,
    });
    expect(tracker.due()).toBe(true);
    expect(tracker.due()).toBe(false);
    now = 1000;
    tracker.add(400);
    expect(tracker.due()).toBe(true);
    expect(tracker.snapshot()).toEqual({
      v: 1,
      component: 'backend',
      version: '1.1.0',
      status: 'in_progress',
      bytes_done: 400,
      total_bytes: 1000,
      percent: 40,
      rate_bytes_per_second: 400,
      eta_seconds: 2,
    });
    now = 2000;
    tracker.add(600);
    expect(tracker.snapshot('completed')).toMatchObject({
      percent: 100,
      eta_seconds: 0,
      status: 'completed',
    });
  });
});
