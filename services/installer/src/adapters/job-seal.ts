import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import { type InstallJob, keptSecret, type RollbackJob } from '@aico-update/shared';

/*
 * The installer's seal on the install jobs it queues for operators. Jobs sit in Redis, which other
 * services write (the downloader queues automatic installs): a job that says "an operator asked for this,
 * run it now, downgrade allowed" is believed only when it carries an HMAC made with a key that lives on
 * the installer's own volume. An unsealed (or forged) job is an automatic one, decided by policy.
 */

/** A sealed job is honoured for this long (a queued install runs within minutes; replays age out). */
const SEAL_LIFETIME_MS = 7 * 24 * 3600 * 1000;

export class JobSeal {
  readonly #key: Buffer;

  private constructor(key: Buffer) {
    this.#key = key;
  }

  /** The key in `<stateDir>/job-key` (made on first start, mode 0600). */
  static async open(stateDir: string): Promise<JobSeal> {
    const { value } = await keptSecret(join(stateDir, 'job-key'), {
      parse: (text) => {
        const key = Buffer.from(text.trim(), 'hex');
        return key.length === 32 ? key : undefined;
      },
      make: () => {
        const key = randomBytes(32);
        return { value: key, text: key.toString('hex') };
      },
    });
    return new JobSeal(value);
  }

  seal(job: InstallJob, now = new Date()): InstallJob {
    const { mac: _mac, ...unsealed } = job;
    const issued = { ...unsealed, issued_at: now.toISOString() };
    return { ...issued, mac: this.#mac(installFields(issued)) };
  }

  /** True for a job this installer sealed, unchanged, within its lifetime. */
  verify(job: InstallJob, now = new Date()): boolean {
    return this.#check(installFields(job), job, now);
  }

  sealRollback(job: RollbackJob, now = new Date()): RollbackJob {
    const { mac: _mac, ...unsealed } = job;
    const issued = { ...unsealed, issued_at: now.toISOString() };
    return { ...issued, mac: this.#mac(rollbackFields(issued)) };
  }

  verifyRollback(job: RollbackJob, now = new Date()): boolean {
    return this.#check(rollbackFields(job), job, now);
  }

  #check(
    fields: unknown[],
    job: { mac?: string | undefined; issued_at?: string | undefined; scheduled_for?: string | undefined },
    now: Date,
  ): boolean {
    if (!job.mac || !job.issued_at) return false;
    // Valid from when it was issued; a scheduled install's seal ages from its time, not from then (so
    // it holds while it waits, and the worker can tell a job promoted early and delay it again).
    const issued = Date.parse(job.issued_at);
    const from = Math.max(issued, Date.parse(job.scheduled_for ?? '') || 0);
    if (now.getTime() < issued - 60_000 || now.getTime() - from > SEAL_LIFETIME_MS) return false;
    const expected = Buffer.from(this.#mac(fields), 'hex');
    const given = Buffer.from(job.mac, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  #mac(fields: unknown[]): string {
    return createHmac('sha256', this.#key).update(JSON.stringify(fields)).digest('hex');
  }
}

const installFields = (job: InstallJob) => [
  'install',
  job.v,
  job.release.component,
  job.release.version,
  job.reason,
  job.auto_restart ?? null,
  job.allow_downgrade ?? false,
  job.scheduled_for ?? null,
  job.issued_at ?? null,
];

const rollbackFields = (job: RollbackJob) => [
  'rollback',
  job.component,
  job.backup_id ?? null,
  job.keep_data ?? false,
  job.source ?? null,
  job.issued_at ?? null,
];
