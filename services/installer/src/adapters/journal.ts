import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '@aico-update/shared';
import type { InstallStep } from '../domain/install-plan.ts';
import type { InstallOrder } from '../domain/install-policy.ts';

/*
 * The install journal: one JSON file on the installer's volume, replaced atomically (write, fsync,
 * rename) before and after every step. Whatever instant the installer dies at, the file on disk
 * describes either the state before a step or after it, and says what was swapped.
 */

export interface JournalSwap {
  service: string;
  container: string;
  oldImageId: string;
  /** The tag the deployment uses, moved to the new image before the swap. */
  ref: string | undefined;
}

export interface Journal {
  v: 1;
  /** An install of `job`'s release, or an operator's rollback of it. */
  kind: 'install' | 'rollback';
  /** The authorized install (the release as the installer's own verified metadata signs it). */
  job: InstallOrder;
  /** The component's installed version before, and the one it has when this finishes. */
  from_version: string | undefined;
  target_version: string | undefined;
  /** Service → the signed image id it runs once this finishes (recorded as installed). */
  images?: Record<string, string>;
  /** Said in the history when this finishes (e.g. who asked for a rollback). */
  reason?: string | undefined;
  /** The data backup taken by this install: a rollback restores it. */
  backup_id?: string;
  started_at: string;
  steps: (InstallStep & { status: 'pending' | 'started' | 'done' })[];
  /** Services whose swap began, recorded before anything is renamed. */
  swaps: JournalSwap[];
}

export class JournalStore {
  readonly #file: string;

  constructor(stateDir: string) {
    this.#file = join(stateDir, 'install-journal.json');
  }

  async read(): Promise<Journal | undefined> {
    try {
      return JSON.parse(await readFile(this.#file, 'utf8')) as Journal;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async write(journal: Journal): Promise<void> {
    await mkdir(join(this.#file, '..'), { recursive: true });
    await writeFileAtomic(this.#file, JSON.stringify(journal));
  }

  async clear(): Promise<void> {
    await rm(this.#file, { force: true });
  }
}
