import { createHash } from 'node:crypto';

/*
 * FastCDC (Xia et al., 2016/2020) over a stream: a gear rolling hash decides where chunks end, so an
 * edit moves only the boundaries near it and everything after realigns. Normalized chunking: a
 * stricter mask before the average size and a looser one after keeps sizes close to the average.
 * The gear table and masks are part of the published format ("fastcdc-gear32-v1"): a client must cut
 * exactly where the publisher cut, so they never change under that name.
 * Written here because no maintained JavaScript implementation exists (the npm `fastcdc` package binds
 * a Rust crate and needs a Rust toolchain at install).
 */

export const CHUNKER_ALGORITHM = 'fastcdc-gear32-v1';

export interface ChunkSizes {
  min: number;
  avg: number;
  max: number;
}

/**
 * 1 MiB average: each chunk is its own zstd frame, and frames much smaller than this compress
 * measurably worse (64 KiB: 0.99 of gzip; 1 MiB: 0.79). A 1 MiB edit still costs ~3 MiB of a layer.
 */
export const DEFAULT_CHUNK_SIZES: ChunkSizes = { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 };

const GEAR = (() => {
  const table = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    table[i] = createHash('sha256').update(`aico-fastcdc-gear-${i}`).digest().readInt32BE(0);
  }
  return table;
})();

/** The top `bits` bits: with a left-shifting hash, high bits depend on the most recent 32 bytes. */
function topBits(bits: number): number {
  return (0xffffffff << (32 - bits)) | 0;
}

function checkSizes({ min, avg, max }: ChunkSizes): void {
  if (!(Number.isInteger(min) && Number.isInteger(avg) && Number.isInteger(max))) {
    throw new RangeError('chunk sizes must be integers');
  }
  if (!(min >= 64 && min < avg && avg < max && max <= 16 * 1024 * 1024)) {
    throw new RangeError(`chunk sizes need 64 ≤ min < avg < max ≤ 16 MiB (got ${min}/${avg}/${max})`);
  }
}

/**
 * Cuts a byte stream into content-defined chunks. `push` bytes in any pieces; every completed chunk is
 * handed to `onChunk` (a buffer it may keep); `end` flushes the last one. Memory: one max-size buffer.
 */
export class Chunker {
  readonly #sizes: ChunkSizes;
  readonly #maskStrict: number;
  readonly #maskLoose: number;
  readonly #onChunk: (chunk: Buffer) => void;
  #buffer: Buffer;
  #filled = 0;

  constructor(onChunk: (chunk: Buffer) => void, sizes: ChunkSizes = DEFAULT_CHUNK_SIZES) {
    checkSizes(sizes);
    this.#sizes = sizes;
    const bits = Math.round(Math.log2(sizes.avg));
    this.#maskStrict = topBits(bits + 2);
    this.#maskLoose = topBits(bits - 2);
    this.#onChunk = onChunk;
    this.#buffer = Buffer.allocUnsafe(sizes.max);
  }

  push(bytes: Uint8Array): void {
    let offset = 0;
    while (offset < bytes.length) {
      const take = Math.min(bytes.length - offset, this.#buffer.length - this.#filled);
      this.#buffer.set(bytes.subarray(offset, offset + take), this.#filled);
      this.#filled += take;
      offset += take;
      if (this.#filled === this.#buffer.length) this.#emit(this.#cut(this.#filled));
    }
  }

  end(): void {
    while (this.#filled > 0) this.#emit(this.#cut(this.#filled));
  }

  /** Where the chunk at the start of the buffer ends, looking at `available` bytes. */
  #cut(available: number): number {
    const { min, avg } = this.#sizes;
    if (available <= min) return available;
    const buf = this.#buffer;
    const normal = Math.min(avg, available);
    let hash = 0;
    let i = min;
    for (; i < normal; i++) {
      hash = ((hash << 1) + (GEAR[buf[i] as number] as number)) | 0;
      if ((hash & this.#maskStrict) === 0) return i + 1;
    }
    for (; i < available; i++) {
      hash = ((hash << 1) + (GEAR[buf[i] as number] as number)) | 0;
      if ((hash & this.#maskLoose) === 0) return i + 1;
    }
    return available;
  }

  #emit(length: number): void {
    this.#onChunk(Buffer.from(this.#buffer.subarray(0, length)));
    this.#buffer.copyWithin(0, length, this.#filled);
    this.#filled -= length;
  }
}
