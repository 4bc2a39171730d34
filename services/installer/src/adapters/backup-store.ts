import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '@aico-update/shared';

/*
 * Data backups on the installer's volume, one folder each: `<dir>/<id>/` with a tar per backed-up path
 * or hook file and `backup.json` describing them. A backup is built in a hidden folder and renamed into
 * place only when complete, so a folder without the dot is always a whole backup.
 */

export interface BackupEntry {
  /** The release service whose container holds the path (restored when that service rolls back). */
  service: string;
  path: string;
  /** The tar, relative to the backup folder. */
  file: string;
  bytes: number;
  /** Of the tar, so a restore refuses one cut short (backups before this was recorded have none). */
  sha256?: string;
}

export interface HookEntry {
  container: string;
  /** The file the hook's backup command wrote inside the container. */
  path: string;
  restore: string[];
  file: string;
  bytes: number;
  sha256?: string;
}

export interface Backup {
  v: 1;
  id: string;
  component: string;
  from_version: string;
  to_version: string;
  created_at: string;
  entries: BackupEntry[];
  hooks: HookEntry[];
}

export class BackupStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** A fresh id that sorts by time and says what it is: `backend-1.0.0-20261127T133000Z`. */
  newId(component: string, fromVersion: string, now = new Date()): string {
    const stamp = now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    return `${component}-${fromVersion}-${stamp}`;
  }

  /** Builds a backup in a hidden folder; `fill` writes the tars; the folder appears only when whole. */
  async create(
    meta: Omit<Backup, 'v' | 'entries' | 'hooks'>,
    fill: (folder: string) => Promise<Pick<Backup, 'entries' | 'hooks'>>,
  ): Promise<Backup> {
    const work = join(this.dir, `.${meta.id}.${randomBytes(3).toString('hex')}`);
    await mkdir(work, { recursive: true });
    try {
      const backup: Backup = { v: 1, ...meta, ...(await fill(work)) };
      await writeFileAtomic(join(work, 'backup.json'), JSON.stringify(backup, null, 2));
      await rm(this.folder(meta.id), { recursive: true, force: true });
      await rename(work, this.folder(meta.id));
      return backup;
    } catch (error) {
      await rm(work, { recursive: true, force: true });
      throw error;
    }
  }

  folder(id: string): string {
    return join(this.dir, id);
  }

  async read(id: string): Promise<Backup | undefined> {
    if (!/^[a-zA-Z0-9][\w.-]*$/.test(id)) return undefined;
    try {
      return JSON.parse(await readFile(join(this.folder(id), 'backup.json'), 'utf8')) as Backup;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  /** Whole backups, newest first. */
  async list(): Promise<Backup[]> {
    const names = await readdir(this.dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [] as string[];
      throw error;
    });
    const backups: Backup[] = [];
    for (const name of names.filter((n) => !n.startsWith('.'))) {
      const backup = await this.read(name);
      if (backup) backups.push(backup);
    }
    return backups.sort((a, b) => b.created_at.localeCompare(a.created_at));
  }

  /** Keeps the newest `keep` backups (and any listed in `pinned`); removes the rest and stale hidden folders. */
  async prune(keep: number, pinned: readonly string[] = []): Promise<string[]> {
    const backups = await this.list();
    const removed: string[] = [];
    for (const backup of backups.slice(keep)) {
      if (pinned.includes(backup.id)) continue;
      await rm(this.folder(backup.id), { recursive: true, force: true });
      removed.push(backup.id);
    }
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (name.startsWith('.')) await rm(join(this.dir, name), { recursive: true, force: true });
    }
    return removed;
  }

  /** Size of the newest backup of a component: the estimate a disk preflight uses for the next one. */
  async lastSize(component: string): Promise<number> {
    const last = (await this.list()).find((b) => b.component === component);
    if (!last) return 0;
    let bytes = 0;
    for (const entry of [...last.entries, ...last.hooks]) {
      bytes += await stat(join(this.folder(last.id), entry.file)).then(
        (s) => s.size,
        () => 0,
      );
    }
    return bytes;
  }
}
