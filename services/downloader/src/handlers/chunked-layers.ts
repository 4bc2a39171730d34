import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ChunkCatalog,
  type ChunkIndex,
  ChunkIndexError,
  ChunkVerificationError,
  type DeltaPlan,
  decodeIndex,
  HeldLayer,
  plannedDelta,
  rebuildLayer,
} from '@aico-update/chunked-layer';
import { hashFile, type Logger } from '@aico-update/shared';
import { TufError, type TufSession } from '@aico-update/tuf-client';
import type { BlobStore } from '../adapters/blob-store.ts';
import type { NeededFile } from '../domain/plan-download.ts';
import { ReleaseRejected } from './release-rejected.ts';
import { signedTarget } from './signed-target.ts';

/*
 * Layers published chunked: each arrives as its chunk index (a small signed target, kept in
 * `indexes/`) and the pack frames of the chunks no cached layer holds, fetched with grouped range
 * requests, verified frame by frame and rebuilt into the exact layer (checked against its diff_id)
 * before it is renamed into `blobs/`. The wire bytes of every layer are known before the first one
 * is fetched: that is what progress counts against.
 */

export type ChunkedFile = NeededFile & { chunked: NonNullable<NeededFile['chunked']> };

export function isChunked(file: NeededFile): file is ChunkedFile {
  return file.chunked !== undefined;
}

export class ChunkedLayers {
  readonly #store: BlobStore;
  readonly #session: TufSession;
  readonly #log: Logger;
  readonly #catalog = new ChunkCatalog();
  readonly #indexes = new Map<string, ChunkIndex>();

  constructor(store: BlobStore, session: TufSession, log: Logger) {
    this.#store = store;
    this.#session = session;
    this.#log = log;
  }

  /**
   * Fetches the chunk index of every chunked layer of the release that is not cached yet (also of
   * layers already held: they become chunk sources for later deltas) and catalogues the chunks every
   * cached layer with an index holds. Returns the bytes the indexes took on the wire.
   */
  async prepare(files: readonly NeededFile[], signal?: AbortSignal): Promise<number> {
    let fetched = 0;
    const present = await this.#store.cachedIndexes();
    for (const file of files.filter(isChunked)) {
      if (present.has(file.sha256)) {
        // A cached index is input like any other file in the cache: kept while it is the signed one.
        const cached = await hashFile(this.#store.indexPathOf(file.sha256));
        if (cached.sha256 === file.chunked.index.sha256) continue;
        this.#log.warn(
          { layer: file.sha256, found: cached.sha256, signed: file.chunked.index.sha256 },
          'the cached chunk index of a layer is not the signed one; fetching it again',
        );
        await this.#store.removeIndex(file.sha256);
      }
      const info = await signedTarget(this.#session, file.chunked.index);
      const outcome = await this.#session.downloadTarget(info, this.#store.indexPathOf(file.sha256), {
        partialDir: this.#store.partialsDir,
        ...(signal ? { signal } : {}),
      });
      fetched += outcome.fetchedBytes;
    }
    const held = await this.#store.cached();
    for (const sha of await this.#store.cachedIndexes()) {
      const own = files.find((f) => f.sha256 === sha);
      if (own?.chunked) {
        // This release's own index: one that does not add up is the publisher's mistake, refused.
        this.#indexes.set(
          sha,
          await this.#decode(
            sha,
            { length: own.length, packLength: own.chunked.pack.length },
            own.chunked.index.sha256,
          ),
        );
      }
      if (!held.has(sha)) continue;
      const index =
        this.#indexes.get(sha) ??
        (await this.#decode(sha, { length: (await stat(this.#store.pathOf(sha))).size }).catch(
          (error: unknown) => {
            this.#log.warn(
              { layer: sha, err: error },
              'a cached chunk index is not valid; it is no chunk source',
            );
            return undefined;
          },
        ));
      if (index) this.#catalog.add(new HeldLayer(this.#store.pathOf(sha), index));
    }
    return fetched;
  }

  /** What fetching the layer will move on the wire now: the delta, or the whole pack. */
  async plan(file: ChunkedFile): Promise<DeltaPlan> {
    return plannedDelta({ index: this.#index(file), catalog: this.#catalog, partial: this.#partial(file) });
  }

  /** Rebuilds the layer into `blobs/`; returns the pack bytes fetched. */
  async fetch(
    file: ChunkedFile,
    options: { onBytes: (bytes: number) => void; signal?: AbortSignal },
  ): Promise<{ fetchedBytes: number; fallbackChunks: number; plan: DeltaPlan }> {
    const pack = await signedTarget(this.#session, file.chunked.pack);
    let fetchedBytes = 0;
    const onBytes = (bytes: number) => {
      fetchedBytes += bytes;
      options.onBytes(bytes);
    };
    try {
      const outcome = await rebuildLayer({
        index: this.#index(file),
        catalog: this.#catalog,
        openRange: async (start, end) =>
          this.#session.openTargetRange(pack, start, end, {
            onBytes,
            ...(options.signal ? { signal: options.signal } : {}),
          }),
        partial: this.#partial(file),
        dest: this.#store.pathOf(file.sha256),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      return { fetchedBytes, fallbackChunks: outcome.fallbackChunks, plan: outcome.plan };
    } catch (error) {
      if (error instanceof ChunkVerificationError) {
        throw new TufError(
          'attack',
          'TUF_CHUNK_MISMATCH',
          `layer ${file.sha256.slice(0, 12)} from ${file.chunked.pack.target}: ${error.message}; nothing of it was kept beyond its last verified chunk`,
        );
      }
      throw error;
    }
  }

  #index(file: ChunkedFile): ChunkIndex {
    const index = this.#indexes.get(file.sha256);
    if (!index) throw new Error(`the chunk index of ${file.sha256} was not prepared`);
    return index;
  }

  #partial(file: NeededFile): string {
    return join(this.#store.partialsDir, `${file.sha256}.layer`);
  }

  /** Decodes a cached index; with `signedSha256`, only the bytes that hash to it (read once). */
  async #decode(
    sha: string,
    expected: { length: number; packLength?: number },
    signedSha256?: string,
  ): Promise<ChunkIndex> {
    const bytes = await readFile(this.#store.indexPathOf(sha));
    if (signedSha256 && createHash('sha256').update(bytes).digest('hex') !== signedSha256) {
      await this.#store.removeIndex(sha);
      throw new TufError(
        'attack',
        'TUF_HASH_MISMATCH',
        `the chunk index of layer ${sha.slice(0, 12)} changed in the cache after it was verified; removed, it is fetched again on the next try`,
      );
    }
    try {
      return decodeIndex(bytes, { diffId: `sha256:${sha}`, ...expected });
    } catch (error) {
      if (!(error instanceof ChunkIndexError)) throw error;
      await this.#store.removeIndex(sha);
      throw new ReleaseRejected('RELEASE_CHUNK_INDEX_INVALID', `${error.message}; the release is refused`);
    }
  }
}
