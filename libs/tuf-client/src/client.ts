import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { type Logger, writeFileAtomic } from '@aico-update/shared';
import { Metadata, MetadataKind, TargetFile } from '@tufjs/models';

type JSONObject = Parameters<typeof TargetFile.fromJSON>[1];

import lockfile from 'proper-lockfile';
import { Updater } from 'tuf-js';
import { classifyTufError, TufError } from './classify.ts';
import type { ResumableOutcome, TufFetcher } from './fetcher.ts';

/*
 * One TUF client per metadata folder. Each session takes the folder's lock, copies the trusted metadata
 * to a staging folder, runs a fresh tuf-js Updater there (refresh() works once per instance), and only
 * when the refresh succeeded moves the changed files back, each by an atomic rename. A rejected update,
 * a crash or a full disk therefore leaves the previously trusted metadata exactly as it was.
 */

export interface TufClientOptions {
  /** Trusted metadata (root.json, timestamp.json, …), on a persistent volume. */
  metadataDir: string;
  /** The root.json shipped with the service: seeds an empty or unreadable metadata folder. */
  trustedRootFile: string;
  metadataUrl: string;
  targetsUrl: string;
  /** Verified targets, by URL-encoded target path. */
  targetsDir: string;
  fetcher: TufFetcher;
  logger?: Logger;
  /** Where the lock file and staging folder live (same disk as metadataDir); default: its parent. */
  workDir?: string;
}

export interface RefreshOutcome {
  /** The verified targets metadata, as of this refresh. */
  targets: Map<string, TargetFile>;
  /** Versions of the trusted metadata after the refresh. */
  versions: Record<'root' | 'timestamp' | 'snapshot' | 'targets', number>;
  /** Earliest expiry among the trusted top-level metadata (for "expiring soon" alerts). */
  expiresAt: Date;
  consistentSnapshot: boolean;
}

export interface TufSession extends RefreshOutcome {
  /** A target's signed info, following delegations (top-level targets are also in `targets`). */
  targetInfo(path: string): Promise<TargetFile | undefined>;
  /** Returns the local path of the verified target, downloading it unless a valid copy is cached. */
  fetchTarget(info: TargetFile): Promise<string>;
  /**
   * Downloads a large target to `dest` (resumable, verified while streaming against the signed length
   * and sha256, renamed into place only when verified). `partialDir` must be on the same disk as `dest`.
   */
  downloadTarget(info: TargetFile, dest: string, options: DownloadTargetOptions): Promise<ResumableOutcome>;
}

export interface DownloadTargetOptions {
  partialDir: string;
  onBytes?: (bytes: number) => void;
  signal?: AbortSignal;
}

const ROLE_FILES = ['root.json', 'timestamp.json', 'snapshot.json', 'targets.json'] as const;

export class TufClient {
  readonly #options: TufClientOptions;
  readonly #workDir: string;

  constructor(options: TufClientOptions) {
    this.#options = options;
    this.#workDir = options.workDir ?? dirname(options.metadataDir);
  }

  /** Refreshes metadata and runs `use` with the verified result. Throws TufError, classified. */
  async session<T>(use: (session: TufSession) => Promise<T>): Promise<T> {
    const { metadataDir } = this.#options;
    await mkdir(metadataDir, { recursive: true });
    const release = await this.#lock();
    const staging = join(
      this.#workDir,
      `.${basename(metadataDir)}.staging-${randomBytes(4).toString('hex')}`,
    );
    try {
      await this.#ensureTrustedRoot();
      await mkdir(staging, { recursive: true });
      for (const name of await readdir(metadataDir)) {
        if (name.endsWith('.json')) await copyFile(join(metadataDir, name), join(staging, name));
      }
      const updater = new Updater({
        metadataDir: staging,
        metadataBaseUrl: this.#options.metadataUrl,
        targetDir: this.#options.targetsDir,
        targetBaseUrl: this.#options.targetsUrl,
        fetcher: this.#options.fetcher,
      });
      this.#options.fetcher.lastError = undefined;
      try {
        await updater.refresh();
      } catch (error) {
        throw classifyTufError(error, this.#options.fetcher.lastError);
      }
      await this.#commit(staging);
      const outcome = await readOutcome(staging);
      try {
        return await use({
          ...outcome,
          targetInfo: async (path) => {
            try {
              return await updater.getTargetInfo(path);
            } catch (error) {
              throw classifyTufError(error, this.#options.fetcher.lastError);
            }
          },
          fetchTarget: (info) => this.#fetchTarget(updater, info),
          downloadTarget: (info, dest, options) =>
            this.#downloadTarget(info, dest, options, outcome.consistentSnapshot),
        });
      } finally {
        // Delegated roles loaded during the session were verified before tuf-js persisted them.
        await this.#commit(staging);
      }
    } finally {
      await rm(staging, { recursive: true, force: true });
      await release();
    }
  }

  /** The locally trusted metadata without touching the network (status pages, expiry alerts). */
  async trusted(): Promise<RefreshOutcome | undefined> {
    try {
      return await readOutcome(this.#options.metadataDir);
    } catch {
      return undefined;
    }
  }

  async #downloadTarget(
    info: TargetFile,
    dest: string,
    options: DownloadTargetOptions,
    consistentSnapshot: boolean,
  ): Promise<ResumableOutcome> {
    const sha256 = info.hashes.sha256;
    if (!sha256) {
      throw new TufError(
        'attack',
        'TUF_INVALID_METADATA',
        `target ${info.path} has no sha256 in its signed metadata; refusing it`,
      );
    }
    // The same URL tuf-js would use: with consistent snapshots, the file name carries its hash.
    const slash = info.path.lastIndexOf('/');
    const name = consistentSnapshot ? `${sha256}.${info.path.slice(slash + 1)}` : info.path.slice(slash + 1);
    const path = slash >= 0 ? `${info.path.slice(0, slash)}/${name}` : name;
    const url = `${this.#options.targetsUrl.replace(/\/$/, '')}/${path.split('/').map(encodeURIComponent).join('/')}`;
    this.#options.fetcher.lastError = undefined;
    try {
      return await this.#options.fetcher.downloadResumable(
        url,
        { length: info.length, sha256 },
        dest,
        options,
      );
    } catch (error) {
      if ((error as Error).name === 'AbortError') throw error;
      throw classifyTufError(error, this.#options.fetcher.lastError);
    }
  }

  async #fetchTarget(updater: Updater, info: TargetFile): Promise<string> {
    await mkdir(this.#options.targetsDir, { recursive: true });
    const dest = join(this.#options.targetsDir, encodeURIComponent(info.path));
    const cached = await updater.findCachedTarget(info, dest);
    if (cached) return cached;
    const partial = `${dest}.partial-${randomBytes(4).toString('hex')}`;
    this.#options.fetcher.lastError = undefined;
    try {
      await updater.downloadTarget(info, partial);
      await rename(partial, dest);
      return dest;
    } catch (error) {
      throw classifyTufError(error, this.#options.fetcher.lastError);
    } finally {
      await rm(partial, { force: true });
    }
  }

  /** One lock per metadata folder, across processes; stale locks (a killed process) expire. */
  async #lock(): Promise<() => Promise<void>> {
    try {
      return await lockfile.lock(this.#options.metadataDir, {
        lockfilePath: join(this.#workDir, `.${basename(this.#options.metadataDir)}.lock`),
        realpath: false,
        // A holder refreshes the lock every 5 s; one that crashed is taken over after 10 s.
        stale: 10_000,
        update: 5_000,
        retries: { retries: 600, minTimeout: 50, maxTimeout: 500 },
      });
    } catch (error) {
      throw new TufError(
        'local',
        'TUF_LOCKED',
        `the TUF metadata folder ${this.#options.metadataDir} stayed locked by another process: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /** Seeds root.json from the shipped root when missing or unreadable; the chain of roots is re-walked. */
  async #ensureTrustedRoot(): Promise<void> {
    const local = join(this.#options.metadataDir, 'root.json');
    try {
      Metadata.fromJSON(MetadataKind.Root, JSON.parse(await readFile(local, 'utf8')));
      return;
    } catch (error) {
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      try {
        const shipped = await readFile(this.#options.trustedRootFile);
        Metadata.fromJSON(MetadataKind.Root, JSON.parse(shipped.toString('utf8')));
        await writeFileAtomic(local, shipped);
      } catch (seedError) {
        throw new TufError(
          'config',
          'TUF_TRUSTED_ROOT_INVALID',
          `the shipped trusted root ${this.#options.trustedRootFile} cannot be used: ${(seedError as Error).message}; ` +
            'point tuf.trusted_root at the root.json your publisher distributes',
          { cause: seedError },
        );
      }
      if (!missing) {
        this.#options.logger?.warn(
          { file: local, err: error },
          'local trusted root was unreadable; re-seeded it from the shipped root (newer roots are fetched and verified again)',
        );
      }
    }
  }

  async #commit(staging: string): Promise<void> {
    for (const name of await readdir(staging)) {
      if (!name.endsWith('.json')) continue;
      const next = await readFile(join(staging, name));
      const current = await readFile(join(this.#options.metadataDir, name)).catch(() => undefined);
      if (current?.equals(next)) continue;
      await writeFileAtomic(join(this.#options.metadataDir, name), next);
    }
  }
}

async function readOutcome(dir: string): Promise<RefreshOutcome> {
  const read = async (name: (typeof ROLE_FILES)[number]) =>
    JSON.parse(await readFile(join(dir, name), 'utf8'));
  const root = Metadata.fromJSON(MetadataKind.Root, await read('root.json'));
  const timestamp = Metadata.fromJSON(MetadataKind.Timestamp, await read('timestamp.json'));
  const snapshot = Metadata.fromJSON(MetadataKind.Snapshot, await read('snapshot.json'));
  // targets.json was verified by tuf-js in this session (or an earlier one, under the same lock). It is
  // read entry by entry: @tufjs/models' Targets.fromJSON is quadratic in the number of targets
  // (object spread in a reduce), which costs seconds at a few thousand targets.
  const targets = (await read('targets.json')) as {
    signed: { version: number; expires: string; targets?: Record<string, JSONObject> };
  };
  const targetFiles = new Map<string, TargetFile>();
  for (const [path, entry] of Object.entries(targets.signed.targets ?? {})) {
    targetFiles.set(path, TargetFile.fromJSON(path, entry));
  }
  const expiries = [
    root.signed.expires,
    timestamp.signed.expires,
    snapshot.signed.expires,
    targets.signed.expires,
  ].map((e) => new Date(e).getTime());
  return {
    targets: targetFiles,
    versions: {
      root: root.signed.version,
      timestamp: timestamp.signed.version,
      snapshot: snapshot.signed.version,
      targets: targets.signed.version,
    },
    expiresAt: new Date(Math.min(...expiries)),
    consistentSnapshot: root.signed.consistentSnapshot,
  };
}

export { TufError };
