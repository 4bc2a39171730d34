import { type UpdatePolicy, updatePolicySchema } from '@aico-update/shared';
import { describe, expect, it } from 'vitest';
import { downloadReason, selectUpdates } from '../../src/domain/select-release.ts';
import { release } from '../support/fakes.ts';

describe('selectUpdates', () => {
  const releases = [
    release({ version: '1.0.0' }),
    release({ version: '1.1.0' }),
    release({ version: '1.2.0-beta.1', channel: 'beta' }),
    release({ version: '1.3.0-dev.4', channel: 'dev' }),
    release({ component: 'frontend', version: '2.0.0' }),
  ];

  it('offers the newest stable release newer than the installed one', () => {
    expect(selectUpdates({ backend: '1.0.0' }, releases, 'stable')).toEqual([
      { component: 'backend', installed: '1.0.0', update: releases[1] },
    ]);
  });

  it('nests channels: beta sees beta and stable, dev sees everything', () => {
    expect(selectUpdates({ backend: '1.0.0' }, releases, 'beta')[0]?.update?.version).toBe('1.2.0-beta.1');
    expect(selectUpdates({ backend: '1.0.0' }, releases, 'dev')[0]?.update?.version).toBe('1.3.0-dev.4');
  });

  it('offers nothing when the installed version is the newest, or newer than anything published', () => {
    expect(selectUpdates({ backend: '1.1.0' }, releases, 'stable')).toEqual([
      { component: 'backend', installed: '1.1.0' },
    ]);
    expect(selectUpdates({ backend: '9.0.0' }, releases, 'dev')).toEqual([
      { component: 'backend', installed: '9.0.0' },
    ]);
  });

  it('steps through a release that can update from the installed version when the newest cannot', () => {
    const withGate = [
      release({ version: '1.5.0' }),
      release({ version: '2.0.0', min_from_version: '1.5.0' }),
    ];
    expect(selectUpdates({ backend: '1.0.0' }, withGate, 'stable')).toEqual([
      {
        component: 'backend',
        installed: '1.0.0',
        update: withGate[0],
        blocked: { version: '2.0.0', min_from_version: '1.5.0' },
      },
    ]);
    expect(selectUpdates({ backend: '1.5.0' }, withGate, 'stable')[0]?.update?.version).toBe('2.0.0');
  });

  it('checks each installed component on its own and ignores components that are not installed', () => {
    const checks = selectUpdates({ backend: '1.1.0', frontend: '1.0.0' }, releases, 'stable');
    expect(checks.map((c) => [c.component, c.update?.version])).toEqual([
      ['backend', undefined],
      ['frontend', '2.0.0'],
    ]);
  });
});

describe('downloadReason', () => {
  const policy = (overrides: Partial<UpdatePolicy>): UpdatePolicy => ({
    ...updatePolicySchema.parse({}),
    ...overrides,
  });

  it.each([
    [{ auto_download: true }, false, 'auto_download'],
    [{ auto_download: false }, false, undefined],
    [{ auto_download: false, critical_install: true }, true, 'critical'],
    [{ auto_download: false, critical_install: false }, true, undefined],
    [{ auto_download: true, critical_install: false }, true, 'auto_download'],
  ] as const)('policy %o, critical %s → %s', (overrides, critical, expected) => {
    expect(downloadReason(release({ version: '1.1.0', critical }), policy(overrides))).toBe(expected);
  });
});

describe('selectUpdates with releases the installer holds back', () => {
  const releases = [
    release({ version: '1.1.0' }),
    release({ version: '1.2.0' }),
    release({ version: '1.3.0' }),
  ];
  const hold = (version: string, kind: 'quarantined' | 'skipped' = 'quarantined') => ({
    component: 'backend' as const,
    version,
    kind,
    reason: 'rolled back: health gate failed',
    at: '2026-12-01T00:00:00.000Z',
  });

  it('never offers a held release; reports it with its reason; offers the newest one not held', () => {
    expect(selectUpdates({ backend: '1.0.0' }, releases, 'stable', [hold('1.3.0')])).toEqual([
      { component: 'backend', installed: '1.0.0', update: releases[1], held: [hold('1.3.0')] },
    ]);
    expect(selectUpdates({ backend: '1.2.0' }, releases, 'stable', [hold('1.3.0', 'skipped')])).toEqual([
      { component: 'backend', installed: '1.2.0', held: [hold('1.3.0', 'skipped')] },
    ]);
  });

  it('a newer good release supersedes a held one (no longer reported)', () => {
    expect(selectUpdates({ backend: '1.0.0' }, releases, 'stable', [hold('1.2.0')])).toEqual([
      { component: 'backend', installed: '1.0.0', update: releases[2] },
    ]);
  });
});
