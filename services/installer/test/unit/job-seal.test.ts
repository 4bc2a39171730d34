import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { InstallJob } from '@aico-update/shared';
import { makeTempDir } from '@aico-update/shared/testing';
import { describe, expect, it } from 'vitest';
import { JobSeal } from '../../src/adapters/job-seal.ts';

const job: InstallJob = { v: 1, release: { component: 'backend', version: '1.2.0' }, reason: 'request' };

describe('JobSeal: only jobs the installer sealed count as an operator’s', () => {
  it('verifies its own seal, with a key kept on its volume (mode 0600) across restarts', async () => {
    const dir = await makeTempDir('seal');
    const seal = await JobSeal.open(dir);
    const sealed = seal.seal(job);
    expect(seal.verify(sealed)).toBe(true);
    expect((await stat(join(dir, 'job-key'))).mode & 0o777).toBe(0o600);
    expect((await JobSeal.open(dir)).verify(sealed)).toBe(true);
  });

  it('refuses an unsealed job, a changed one, another key’s, an expired one', async () => {
    const seal = await JobSeal.open(await makeTempDir('seal'));
    const other = await JobSeal.open(await makeTempDir('seal'));
    const sealed = seal.seal(job);
    expect(seal.verify(job)).toBe(false);
    expect(seal.verify({ ...sealed, allow_downgrade: true })).toBe(false);
    expect(seal.verify({ ...sealed, release: { component: 'backend', version: '0.1.0' } })).toBe(false);
    expect(other.verify(sealed)).toBe(false);
    const old = seal.seal(job, new Date(Date.now() - 8 * 24 * 3600_000));
    expect(seal.verify(old)).toBe(false);
  });

  it('binds a scheduled install to its time: moved in Redis it is refused; its seal ages from that time', async () => {
    const seal = await JobSeal.open(await makeTempDir('seal'));
    const at = new Date(Date.now() + 20 * 24 * 3600_000).toISOString();
    const scheduled = seal.seal({ ...job, scheduled_for: at });
    expect(seal.verify(scheduled)).toBe(true);
    expect(seal.verify({ ...scheduled, scheduled_for: new Date().toISOString() })).toBe(false);
    const { scheduled_for: _at, ...unscheduled } = scheduled;
    expect(seal.verify(unscheduled)).toBe(false);
    // 20 days out, still honoured on the day it runs (the 7-day lifetime counts from its time).
    expect(seal.verify(scheduled, new Date(Date.parse(at) + 3600_000))).toBe(true);
    expect(seal.verify(scheduled, new Date(Date.parse(at) + 8 * 24 * 3600_000))).toBe(false);
  });

  it('seals rollbacks apart from installs', async () => {
    const seal = await JobSeal.open(await makeTempDir('seal'));
    const rollback = seal.sealRollback({ v: 1, component: 'backend', backup_id: 'backend-1.0.0-x' });
    expect(seal.verifyRollback(rollback)).toBe(true);
    expect(seal.verifyRollback({ ...rollback, backup_id: 'backend-0.9.0-y' })).toBe(false);
    expect(seal.verifyRollback({ v: 1, component: 'backend' })).toBe(false);
  });
});
