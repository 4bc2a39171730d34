import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { type Logger, writeFileAtomic } from '@aico-update/shared';
import { Metadata, MetadataKind, TargetFile } from '@tufjs/models';

type JSONObject = Parameters<typeof TargetFile.fromJSON>[1];

import lockfile from 'proper-lockfile';
import { Updater } from 'tuf-js';
import { PersistError } from 'tuf-js/dist/error.js';
import { classifyTufError, TufError } from './classify.ts';
import { type ResumableOutcome, TufFetcher } from './fetcher.ts';
import { type DirectoryFetcher, exportMirror } from './mirror.ts';

/*
 * One TUF client per metadata folder. A session takes the folder's lock and runs a fresh tuf-js Updater
 * on the folder itself (refresh() works once per instance). Each role is kept the moment it is verified,
 * as the TUF specification's client workflow says (5.3.8, 5.4.5, 5.5.7, 5.6.7): a refresh that fails at
 * snapshot still keeps the new root and timestamp it verified first, so a rotation that revoked a key
 * stays in force and the new versions are the rollback floor. What was not verified never replaces what
 * is trusted. Every file is written atomically (temporary file, fsync, rename): a crash or a full disk
 * leaves whole files only. Every trusted root is also kept in `root_history/N.root.json`, so a corrupt
 * root.json is restored from the newest trusted root, never from the older shipped one.
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
  fetcher: TufFetcher | DirectoryFetcher;
  logger?: Logger;
  /** Where the lock file lives (same disk as metadataDir); default: its parent. */
  workDir?: string;
  /** After every successful refresh, the verified metadata is copied here (see mirror.ts). */
  mirrorDir?: string | undefined;
}

export interface RefreshOutcome {
  /** The verified targets metadata, as of this refresh. */
  targets: Map<string, TargetFile>;
  /** Versions of the trusted metadata after the refresh. */
  versions: Record<'root' | 'timestamp' | 'snapshot' | 'targets', number>;
  /** Earliest expiry among the trusted top-level metadata. */
  expiresAt: Date;
  /** Each top-level role's expiry: judged against its own lifetime (the timestamp lives a day). */
  expiries: Record<'root' | 'timestamp' | 'snapshot' | 'targets', Date>;
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
  /**
   * Bytes [start, end) of a signed target, unverified: only for a caller that verifies what it reads
   * against hashes the target's signed contents give (a chunk pack read through its signed index).
   */
  openTargetRange(
    info: TargetFile,
    start: number,
    end: number,
    options?: Omit<DownloadTargetOptions, 'partialDir'>,
  ): AsyncIterable<Buffer>;
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
    await mkdir(join(metadataDir, ROOT_HISTORY), { recursive: true });
    const release = await this.#lock();
    try {
      await this.#ensureTrustedRoot();
      const updater = new Updater({
        metadataDir,
        metadataBaseUrl: this.#options.metadataUrl,
        targetDir: this.#options.targetsDir,
        targetBaseUrl: this.#options.targetsUrl,
        fetcher: this.#options.fetcher,
      });
      // tuf-js persists each verified role with a plain write: made atomic, and roots kept in history.
      (updater as unknown as { persistMetadata: PersistMetadata }).persistMetadata =
        persistAtomically(metadataDir);
      this.#options.fetcher.lastError = undefined;
      try {
        await updater.refresh();
      } catch (error) {
        throw classifyTufError(error, this.#options.fetcher.lastError);
      }
      const outcome = await readOutcome(metadataDir);
      if (this.#options.mirrorDir) {
        // A mirror that falls behind only delays its readers (their metadata expires): never fail for it.
        await exportMirror(metadataDir, this.#options.mirrorDir).catch((error: unknown) =>
          this.#options.logger?.error(
            { err: error, mirror: this.#options.mirrorDir },
            `could not update the TUF mirror ${this.#options.mirrorDir}: ${(error as Error).message}`,
          ),
        );
      }
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
        openTargetRange: (info, start, end, options) =>
          this.#openTargetRange(info, start, end, options ?? {}, outcome.consistentSnapshot),
      });
    } finally {
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
    const { url, sha256, fetcher } = this.#network(info, consistentSnapshot);
    fetcher.lastError = undefined;
    try {
      return await fetcher.downloadResumable(url, { length: info.length, sha256 }, dest, options);
    } catch (error) {
      if ((error as Error).name === 'AbortError') throw error;
      throw classifyTufError(error, this.#options.fetcher.lastError);
    }
  }

  async *#openTargetRange(
    info: TargetFile,
    start: number,
    end: number,
    options: Omit<DownloadTargetOptions, 'partialDir'>,
    consistentSnapshot: boolean,
  ): AsyncGenerator<Buffer> {
    if (
      !(
        Number.isSafeInteger(start) &&
        Number.isSafeInteger(end) &&
        start >= 0 &&
        start < end &&
        end <= info.length
      )
    ) {
      throw new TufError(
        'attack',
        'TUF_INVALID_RANGE',
        `bytes ${start}-${end} are not inside target ${info.path} (${info.length} signed bytes)`,
      );
    }
    const { url, fetcher } = this.#network(info, consistentSnapshot);
    fetcher.lastError = undefined;
    try {
      yield* fetcher.openRange(url, start, end, options);
    } catch (error) {
      if ((error as Error).name === 'AbortError') throw error;
      throw classifyTufError(error, this.#options.fetcher.lastError);
    }
  }

  /** The URL tuf-js would use for a target (with consistent snapshots its name carries its hash). */
  #network(
    info: TargetFile,
    consistentSnapshot: boolean,
  ): { url: string; sha256: string; fetcher: TufFetcher } {
    const sha256 = info.hashes.sha256;
    if (!sha256) {
      throw new TufError(
        'attack',
        'TUF_INVALID_METADATA',
        `target ${info.path} has no sha256 in its signed metadata; refusing it`,
      );
    }
    const slash = info.path.lastIndexOf('/');
    const name = consistentSnapshot ? `${sha256}.${info.path.slice(slash + 1)}` : info.path.slice(slash + 1);
    const path = slash >= 0 ? `${info.path.slice(0, slash)}/${name}` : name;
    const url = `${this.#options.targetsUrl.replace(/\/$/, '')}/${path.split('/').map(encodeURIComponent).join('/')}`;
    const { fetcher } = this.#options;
    if (!(fetcher instanceof TufFetcher)) {
      throw new TufError(
        'config',
        'TUF_NO_NETWORK',
        `${info.path}: this client reads a mirror and downloads nothing`,
      );
    }
    return { url, sha256, fetcher };
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

  /**
   * Makes sure root.json is a trusted root. Missing with no history: the first start, seeded from the
   * shipped root. Unreadable: restored from the newest root in `root_history/`, which was verified when it
   * was kept; if that one is unreadable too, the session fails closed, because an older root (the shipped
   * one above all) could bring back keys a rotation revoked.
   */
  async #ensureTrustedRoot(): Promise<void> {
    const { metadataDir } = this.#options;
    const local = join(metadataDir, 'root.json');
    const history = await rootHistory(metadataDir);
    const current = await readRoot(local);
    if (current) {
      // Deployments from before the history existed: start it with the root trusted now.
      if (!history.includes(current.version)) {
        await writeFileAtomic(historyFile(metadataDir, current.version), current.bytes);
      }
      return;
    }
    const exists = await stat(local).then(
      () => true,
      () => false,
    );
    const newest = history.at(-1);
    if (newest !== undefined) {
      const kept = await readRoot(historyFile(metadataDir, newest));
      if (!kept || kept.version !== newest) {
        throw new TufError(
          'local',
          'TUF_LOCAL_STATE',
          `the trusted root ${local} and the newest root in ${join(metadataDir, ROOT_HISTORY)} (version ${newest}) are both unreadable; ` +
            'refusing to fall back to an older root, whose keys may have been revoked. Restore the state volume from a backup, ' +
            `or, if you trust the shipped root ${this.#options.trustedRootFile} again, empty ${metadataDir}`,
        );
      }
      await writeFileAtomic(local, kept.bytes);
      this.#options.logger?.warn(
        { file: local, version: newest },
        `the trusted root was ${exists ? 'unreadable' : 'missing'}; restored version ${newest} from the root history`,
      );
      return;
    }
    if (exists) {
      throw new TufError(
        'local',
        'TUF_LOCAL_STATE',
        `the trusted root ${local} is unreadable and there is no root history to restore it from; refusing to trust the shipped root again ` +
          `in its place (a newer root may have revoked its keys). Restore the state volume from a backup, or, if you trust ${this.#options.trustedRootFile}, empty ${metadataDir}`,
      );
    }
    let shipped: Buffer;
    try {
      shipped = await readFile(this.#options.trustedRootFile);
      const version = Metadata.fromJSON(MetadataKind.Root, JSON.parse(shipped.toString('utf8'))).signed
        .version;
      await writeFileAtomic(historyFile(metadataDir, version), shipped);
    } catch (seedError) {
      throw new TufError(
        'config',
        'TUF_TRUSTED_ROOT_INVALID',
        `the shipped trusted root ${this.#options.trustedRootFile} cannot be used: ${(seedError as Error).message}; ` +
          'point tuf.trusted_root at the root.json your publisher distributes',
        { cause: seedError },
      );
    }
    await writeFileAtomic(local, shipped);
  }
}

/** Trusted roots by version, oldest first: `root_history/N.root.json` beside the metadata. */
export const ROOT_HISTORY = 'root_history';

function historyFile(metadataDir: string, version: number): string {
  return join(metadataDir, ROOT_HISTORY, `${version}.root.json`);
}

async function rootHistory(metadataDir: string): Promise<number[]> {
  const names = await readdir(join(metadataDir, ROOT_HISTORY)).catch(() => [] as string[]);
  return names
    .map((name) => /^(\d+)\.root\.json$/.exec(name)?.[1])
    .filter((v): v is string => v !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

/** A root metadata file that parses, with its version; undefined when missing or unreadable. */
async function readRoot(file: string): Promise<{ version: number; bytes: Buffer } | undefined> {
  try {
    const bytes = await readFile(file);
    const root = Metadata.fromJSON(MetadataKind.Root, JSON.parse(bytes.toString('utf8')));
    return { version: root.signed.version, bytes };
  } catch {
    return undefined;
  }
}

type PersistMetadata = (name: string, bytes: Buffer) => void;

/**
 * What tuf-js calls, synchronously, for every role it has just verified: an atomic write, and for a
 * root its copy in the history first (the history is what a corrupt root.json is restored from).
 */
function persistAtomically(metadataDir: string): PersistMetadata {
  return (name, bytes) => {
    const file = join(metadataDir, `${encodeURIComponent(name)}.json`);
    try {
      if (name === MetadataKind.Root) {
        const version = (JSON.parse(bytes.toString('utf8')) as { signed: { version: number } }).signed
          .version;
        writeFileAtomicSync(historyFile(metadataDir, version), bytes);
      }
      writeFileAtomicSync(file, bytes);
    } catch (error) {
      throw new PersistError(`Failed to persist metadata ${name}: ${(error as Error).message}`);
    }
  };
}

function writeFileAtomicSync(path: string, data: Buffer): void {
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
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
    expiries: {
      root: new Date(root.signed.expires),
      timestamp: new Date(timestamp.signed.expires),
      snapshot: new Date(snapshot.signed.expires),
      targets: new Date(targets.signed.expires),
    },
    consistentSnapshot: root.signed.consistentSnapshot,
  };
}

export { TufError };
