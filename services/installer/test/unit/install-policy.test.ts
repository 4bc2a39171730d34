import type { ReleaseRef } from '@aico-update/shared';
import { describe, expect, it } from 'vitest';
import { decideInstall } from '../../src/domain/install-policy.ts';

const release = (version: string, extra: Partial<ReleaseRef> = {}): ReleaseRef => ({
  component: 'backend',
  version,
  channel: 'stable',
  critical: false,
  notes: '',
  released_at: '2026-12-01T00:00:00Z',
  size_bytes: 1,
  target: { path: `releases/backend/${version}.json`, length: 1, sha256: 'a'.repeat(64) },
  ...extra,
});
const policy = { auto_install: false, critical_install: true, channel: 'stable' as const };
const base = { installed: '1.1.0', operator: false, allowDowngrade: false, policy };

describe('decideInstall: from the signed release, the recorded version and the policy only', () => {
  it('an operator request runs now; an automatic one follows the signed critical flag and the policy', () => {
    expect(decideInstall({ ...base, release: release('1.2.0'), operator: true })).toEqual({
      allowed: true,
      reason: 'request',
    });
    expect(decideInstall({ ...base, release: release('1.2.0', { critical: true }) })).toEqual({
      allowed: true,
      reason: 'critical',
    });
    expect(decideInstall({ ...base, release: release('1.2.0') })).toMatchObject({
      allowed: false,
      code: 'NOT_AUTHORIZED',
    });
    expect(
      decideInstall({ ...base, release: release('1.2.0'), policy: { ...policy, auto_install: true } }),
    ).toEqual({ allowed: true, reason: 'auto_install' });
    expect(
      decideInstall({
        ...base,
        release: release('1.2.0', { critical: true }),
        policy: { ...policy, critical_install: false },
      }),
    ).toMatchObject({ allowed: false, code: 'NOT_AUTHORIZED' });
  });

  it('automatic installs stay on the followed channel', () => {
    expect(
      decideInstall({ ...base, release: release('1.2.0', { critical: true, channel: 'beta' }) }),
    ).toMatchObject({ allowed: false, code: 'CHANNEL_NOT_FOLLOWED' });
    expect(
      decideInstall({ ...base, operator: true, release: release('1.2.0', { channel: 'beta' }) }),
    ).toMatchObject({ allowed: true });
  });

  it('refuses a downgrade and an unreachable release unless the operator asks for it explicitly', () => {
    expect(decideInstall({ ...base, operator: true, release: release('1.0.0') })).toMatchObject({
      allowed: false,
      code: 'DOWNGRADE_REFUSED',
    });
    expect(
      decideInstall({ ...base, operator: true, release: release('2.0.0', { min_from_version: '1.5.0' }) }),
    ).toMatchObject({ allowed: false, code: 'NOT_REACHABLE' });
    expect(
      decideInstall({ ...base, operator: true, allowDowngrade: true, release: release('1.0.0') }),
    ).toEqual({ allowed: true, reason: 'request' });
    // The same version again is not a downgrade (the plan finds nothing to do, or repairs).
    expect(decideInstall({ ...base, operator: true, release: release('1.1.0') })).toMatchObject({
      allowed: true,
    });
  });

  it('a quarantined or skipped release, or a paused component, is never installed by itself; an operator may', () => {
    const hold = (kind: 'quarantined' | 'skipped') => ({
      component: 'backend' as const,
      version: '1.2.0',
      kind,
      reason: kind === 'quarantined' ? 'rolled back: health gate failed' : 'skipped by the user',
      at: '2026-12-01T00:00:00.000Z',
    });
    const critical = release('1.2.0', { critical: true });
    expect(decideInstall({ ...base, release: critical, hold: hold('quarantined') })).toMatchObject({
      allowed: false,
      code: 'QUARANTINED',
      message: expect.stringContaining('health gate failed'),
    });
    expect(decideInstall({ ...base, release: critical, hold: hold('skipped') })).toMatchObject({
      allowed: false,
      code: 'SKIPPED',
    });
    const paused = {
      component: 'backend' as const,
      since: '2026-12-01T00:00:00.000Z',
      failures: 3,
      reason: 'x',
    };
    expect(decideInstall({ ...base, release: critical, paused })).toMatchObject({
      allowed: false,
      code: 'CIRCUIT_OPEN',
      message: expect.stringContaining('after 3 failed automatic installs'),
    });
    expect(
      decideInstall({ ...base, release: critical, operator: true, hold: hold('quarantined'), paused }),
    ).toEqual({ allowed: true, reason: 'request' });
  });
});
