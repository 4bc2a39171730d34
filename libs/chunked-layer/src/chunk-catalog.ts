import { createHash } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';
import { ContentMap, type LayerChunks } from './chunk-index.ts';

/*
 * The chunks this machine already holds: layer files in the cache with their chunk indexes. A chunk is
 * read where it lies in the file and hashed again before it is used, so a file changed or deleted by
 * hand since it was indexed is simply not a source.
 */

/** A layer file on disk and its chunks: where held chunks are read from. */
export class HeldLayer {
  readonly file: string;
  readonly chunks: LayerChunks;
  readonly #map: ContentMap;
  readonly #offsets = new Map<string, number>();

  constructor(file: string, chunks: LayerChunks) {
    this.file = file;
    this.chunks = chunks;
    this.#map = new ContentMap(chunks.layout);
    let offset = 0;
    for (const chunk of chunks.chunks) {
      if (!this.#offsets.has(chunk.sha256)) this.#offsets.set(chunk.sha256, offset);
      offset += chunk.length;
    }
  }

  has(sha256: string): boolean {
    return this.#offsets.has(sha256);
  }

  /** The chunk's bytes, or undefined when the file no longer holds them (deleted, changed by hand). */
  async read(chunk: { sha256: string; length: number }, into?: Buffer): Promise<Buffer | undefined> {
    const offset = this.#offsets.get(chunk.sha256);
    if (offset === undefined) return undefined;
    let handle: FileHandle;
    try {
      handle = await open(this.file, 'r');
    } catch {
      return undefined;
    }
    try {
      const bytes =
        into && into.length >= chunk.length
          ? into.subarray(0, chunk.length)
          : Buffer.allocUnsafe(chunk.length);
      let at = 0;
      for (const [position, length] of this.#map.pieces(offset, chunk.length)) {
        const { bytesRead } = await handle.read(bytes, at, length, position);
        if (bytesRead !== length) return undefined;
        at += length;
      }
      if (at !== chunk.length) return undefined;
      return createHash('sha256').update(bytes).digest('hex') === chunk.sha256 ? bytes : undefined;
    } finally {
      await handle.close();
    }
  }
}

/** Every chunk held across some layer files, by hash. */
export class ChunkCatalog {
  readonly #layers: HeldLayer[] = [];

  add(layer: HeldLayer): void {
    this.#layers.push(layer);
  }

  has(sha256: string): boolean {
    return this.#layers.some((layer) => layer.has(sha256));
  }

  /** The chunk's bytes from the first layer that still holds them; in `into` when it is large enough. */
  async read(chunk: { sha256: string; length: number }, into?: Buffer): Promise<Buffer | undefined> {
    for (const layer of this.#layers) {
      if (!layer.has(chunk.sha256)) continue;
      const bytes = await layer.read(chunk, into);
      if (bytes) return bytes;
    }
    return undefined;
  }
}
