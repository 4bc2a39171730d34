import type { Device, ReleaseManifest, ReleaseRef } from '@aico-update/shared';
import { describe, expect, it } from 'vitest';
import { answerDevice, type FrontendCatalog, strandedBy } from '../../src/domain/frontends.ts';
import { release } from '../support/fakes.ts';

const backend1 = release({ version: '1.0.0', frontend_apis: ['1'] });
const backend2 = release({ version: '2.0.0', frontend_apis: ['2'] });
const frontend1 = release({
  component: 'frontend',
  version: '1.0.0',
  frontend_api: '1',
  needs_backend: '>=1.0.0',
});
const frontend2 = release({
  component: 'frontend',
  version: '2.0.0',
  frontend_api: '2',
  needs_backend: '>=2.0.0',
  store_platforms: ['ios'],
});

function manifest(r: ReleaseRef, platforms: Device['platform'][]): ReleaseManifest {
  return {
    ...r,
    schema: 1,
    images: [],
    artifacts: platforms.map((platform) => ({
      name: `aico-${r.version}-${platform}.pkg`,
      target: `artifacts/frontend/${r.version}/aico-${r.version}-${platform}.pkg`,
      length: 10,
      sha256: 'b'.repeat(64),
      platform,
    })),
  };
}

const catalog = (installed: ReleaseRef): FrontendCatalog => ({
  releases: [backend1, backend2, frontend1, frontend2],
  manifests: new Map([
    ['1.0.0', manifest(frontend1, ['windows', 'macos'])],
    ['2.0.0', manifest(frontend2, ['windows', 'macos'])],
  ]),
  backend: installed,
  channel: 'stable',
  holds: [],
});
const device = (id: string, platform: Device['platform'], version = '1.0.0'): Device => ({
  id,
  platform,
  version,
  first_seen: '2026-12-01T00:00:00.000Z',
  last_seen: '2026-12-01T00:00:00.000Z',
});

describe('answers per device', () => {
  it('a frontend that needs a newer backend waits for it; once it is installed, the package for the platform is offered', () => {
    expect(answerDevice(device('pc', 'windows'), catalog(backend1))).toMatchObject({
      answer: 'waits_for_backend',
      release: { version: '2.0.0' },
      needs_backend: '>=2.0.0',
      reason: expect.stringContaining('backend 1.0.0 is installed'),
    });
    expect(answerDevice(device('pc', 'windows'), catalog(backend2))).toMatchObject({
      answer: 'update',
      release: { version: '2.0.0' },
      package: { platform: 'windows', name: 'aico-2.0.0-windows.pkg' },
    });
  });

  it('a store platform is told to update through the store; a platform without a package gets nothing', () => {
    expect(answerDevice(device('phone', 'ios'), catalog(backend2))).toMatchObject({
      answer: 'store',
      release: { version: '2.0.0' },
    });
    expect(answerDevice(device('box', 'linux'), catalog(backend2))).toMatchObject({ answer: 'up_to_date' });
    expect(answerDevice(device('pc', 'windows', '2.0.0'), catalog(backend2))).toMatchObject({
      answer: 'up_to_date',
    });
  });

  it('a quarantined or skipped frontend release is not offered', () => {
    const held = {
      ...catalog(backend2),
      holds: [
        {
          component: 'frontend' as const,
          version: '2.0.0',
          kind: 'skipped' as const,
          reason: 'x',
          at: '2026-12-01T00:00:00.000Z',
        },
      ],
    };
    expect(answerDevice(device('pc', 'windows'), held)).toMatchObject({ answer: 'up_to_date' });
  });
});

describe('a backend release that would strand devices', () => {
  it('strands a device only when no frontend release for its platform fits the new backend', () => {
    const devices = [device('pc', 'windows'), device('box', 'linux'), device('new', 'macos', '2.0.0')];
    expect(strandedBy(backend2, devices, catalog(backend1)).map((d) => d.id)).toEqual(['box']);
    expect(strandedBy(backend1, devices, catalog(backend1))).toEqual([
      expect.objectContaining({ id: 'new' }),
    ]);
  });
});
