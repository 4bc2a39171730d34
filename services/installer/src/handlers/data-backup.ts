import { join } from 'node:path';
import { AppError, hashFile } from '@aico-update/shared';
import type { Backup, BackupEntry, BackupStore, HookEntry } from '../adapters/backup-store.ts';
import type { ContainerRuntime } from '../domain/ports.ts';

/*
 * The declared critical data, backed up before containers change and restored on a rollback: paths
 * on the services' volumes or bind mounts (archived through the Docker API, so the installer needs no
 * access to the host's folders), and hook commands run inside a container (a database dump and its
 * restore), whose output file is kept with the backup.
 */

export interface BackupHook {
  container: string;
  file: string;
  backup: string[];
  restore: string[];
}

export interface DataDeclaration {
  /** Release service → paths inside its container. */
  paths: Record<string, string[]>;
  hooks: BackupHook[];
}

export async function takeBackup(
  runtime: ContainerRuntime,
  store: BackupStore,
  declared: DataDeclaration,
  what: { component: string; fromVersion: string; toVersion: string; containers: Record<string, string> },
): Promise<Backup> {
  const id = store.newId(what.component, what.fromVersion);
  try {
    return await store.create(
      {
        id,
        component: what.component,
        from_version: what.fromVersion,
        to_version: what.toVersion,
        created_at: new Date().toISOString(),
      },
      async (folder) => {
        const hooks: HookEntry[] = [];
        for (const [index, hook] of declared.hooks.entries()) {
          const result = await runtime.exec(hook.container, hook.backup);
          if (result.exitCode !== 0) {
            throw new AppError(
              'BACKUP_HOOK_FAILED',
              `the backup command in ${hook.container} (${hook.backup.join(' ')}) exited with ${result.exitCode}: ${result.output.trim().slice(-500)}`,
            );
          }
          const file = `hook-${index}.tar`;
          await runtime.archive(hook.container, hook.file, join(folder, file));
          const { length, sha256 } = await hashFile(join(folder, file));
          hooks.push({
            container: hook.container,
            path: hook.file,
            restore: hook.restore,
            file,
            bytes: length,
            sha256,
          });
        }
        const entries: BackupEntry[] = [];
        for (const [service, container] of Object.entries(what.containers)) {
          for (const [index, path] of (declared.paths[service] ?? []).entries()) {
            const mounts = await runtime.mounts(container);
            if (!mounts.some((m) => path === m || path.startsWith(`${m.replace(/\/$/, '')}/`))) {
              throw new AppError(
                'BACKUP_PATH_NOT_MOUNTED',
                `${path} (installer.backup.paths.${service}) is not on a volume or bind mount of ${container}: data there does not survive a container swap; declare a mounted path`,
              );
            }
            const file = `${service}-${index}.tar`;
            await runtime.archive(container, path, join(folder, file));
            const { length, sha256 } = await hashFile(join(folder, file));
            entries.push({ service, path, file, bytes: length, sha256 });
          }
        }
        return { entries, hooks };
      },
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new AppError(
        'DISK_FULL',
        `not enough free space in ${store.dir} (installer.backup.dir) for the data backup; free space there or point installer.backup.dir at a larger volume. Nothing was changed`,
        { cause: error },
      );
    }
    if (error instanceof AppError) throw error;
    throw new AppError('BACKUP_FAILED', `the data backup failed: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Puts a service's backed-up paths back into its (stopped) container. Each archive must hash to what
 * the backup recorded (a file cut short or changed is refused before anything is touched); the runtime
 * extracts into a staging folder and swaps it in whole.
 */
export async function restoreServiceData(
  runtime: ContainerRuntime,
  store: BackupStore,
  backup: Backup,
  service: string,
  container: string,
): Promise<boolean> {
  const entries = backup.entries.filter((e) => e.service === service);
  if (entries.length === 0) return false;
  for (const entry of entries) await verifyArchive(store, backup, entry);
  await runtime.unarchive(
    container,
    entries.map((e) => ({ path: e.path, file: join(store.folder(backup.id), e.file) })),
  );
  return true;
}

/** A backup's archive is whole: its length and sha256 are the ones recorded when it was taken. */
async function verifyArchive(
  store: BackupStore,
  backup: Backup,
  entry: BackupEntry | HookEntry,
): Promise<void> {
  if (!entry.sha256) return; // backups taken before archives were hashed
  const file = join(store.folder(backup.id), entry.file);
  const found = await hashFile(file).catch((error: Error) => ({ length: -1, sha256: error.message }));
  if (found.length !== entry.bytes || found.sha256 !== entry.sha256) {
    throw new AppError(
      'BACKUP_DAMAGED',
      `${file} of backup ${backup.id} is not the archive that was taken (${found.length < 0 ? found.sha256 : `${found.length} bytes, ${entry.bytes} recorded`}): cut short or changed. Nothing was restored from it`,
    );
  }
}

/** Runs the hooks' restores (after the services are back): the dump file first, then its command. */
export async function restoreHooks(
  runtime: ContainerRuntime,
  store: BackupStore,
  backup: Backup,
): Promise<void> {
  for (const hook of backup.hooks) await verifyArchive(store, backup, hook);
  for (const hook of backup.hooks) {
    await runtime.putFile(hook.container, hook.path, join(store.folder(backup.id), hook.file));
    const result = await runtime.exec(hook.container, hook.restore);
    if (result.exitCode !== 0) {
      throw new AppError(
        'RESTORE_FAILED',
        `the restore command in ${hook.container} (${hook.restore.join(' ')}) exited with ${result.exitCode}: ${result.output.trim().slice(-500)}`,
      );
    }
  }
}
