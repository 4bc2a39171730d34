import { createHash } from 'node:crypto';
import { zstdDecompressSync } from 'node:zlib';
import type { ChunkIndex } from './chunk-index.ts';
import type { PackRange } from './delta-plan.ts';

/*
 * Reading a pack: grouped ranges opened a few ahead, frames taken out of them in order, and each frame
 * checked against its signed hash before it is decompressed (to at most its signed length) and checked
 * again as a chunk.
 */

export class ChunkVerificationError extends Error {
  override name = 'ChunkVerificationError';
}

/** Opens pack bytes [start, end) for reading; the caller counts, caps and retries as it must. */
export type OpenRange = (start: number, end: number) => Promise<AsyncIterable<Buffer>>;

/** A frame checked against its signed hash, then decompressed to at most its signed length and checked. */
export function unpack(chunk: ChunkIndex['chunks'][number], frame: Buffer): Buffer {
  if (createHash('sha256').update(frame).digest('hex') !== chunk.frameSha256) {
    throw new ChunkVerificationError(
      `a pack frame (chunk ${chunk.sha256.slice(0, 12)}) does not match its signed sha256: refused before decompressing`,
    );
  }
  let raw: Buffer;
  try {
    raw = zstdDecompressSync(frame, { maxOutputLength: chunk.length, chunkSize: Math.max(chunk.length, 64) });
  } catch (error) {
    throw new ChunkVerificationError(
      `a pack frame (chunk ${chunk.sha256.slice(0, 12)}) decompresses to more than its signed ${chunk.length} bytes or is not zstd: ${(error as Error).message}`,
    );
  }
  if (raw.length !== chunk.length || createHash('sha256').update(raw).digest('hex') !== chunk.sha256) {
    throw new ChunkVerificationError(
      `chunk ${chunk.sha256.slice(0, 12)} does not match its signed sha256: refused`,
    );
  }
  return raw;
}

/** Reads frames out of pack ranges in order, with a few requests opened ahead. */
export class FrameReader {
  readonly #open: OpenRange;
  readonly #ranges: PackRange[];
  readonly #prefetch: number;
  #next = 0;
  readonly #opened: { range: PackRange; body: Promise<ByteReader> }[] = [];
  #current: { range: PackRange; reader: ByteReader; at: number } | undefined;
  /** The range being read: ranges before it are done. */
  #currentIndex = -1;
  /** Where a frame is gathered; valid until the next frame() (each frame is unpacked at once). */
  #scratch = Buffer.alloc(0);

  constructor(openRange: OpenRange, ranges: PackRange[], prefetch: number) {
    this.#open = openRange;
    this.#ranges = ranges;
    this.#prefetch = prefetch;
  }

  covers(chunk: number): boolean {
    for (let r = Math.max(this.#currentIndex, 0); r < this.#ranges.length; r++) {
      const range = this.#ranges[r] as PackRange;
      if (range.first > chunk) return false;
      if (range.last >= chunk) return true;
    }
    return false;
  }

  async frame(_chunk: number, info: { packOffset: number; frameLength: number }): Promise<Buffer> {
    while (!this.#current || info.packOffset >= this.#current.range.end) await this.#advance();
    const current = this.#current;
    if (info.packOffset > current.at) {
      await current.reader.skip(info.packOffset - current.at); // a held frame inside a merged range
      current.at = info.packOffset;
    }
    // Frames that span network pieces are gathered into one reused buffer: a new buffer per frame
    // would be garbage V8 collects only after tens of MiB (the service's memory peak).
    if (this.#scratch.length < info.frameLength) this.#scratch = Buffer.allocUnsafe(info.frameLength);
    const frame = await current.reader.take(info.frameLength, this.#scratch);
    current.at += info.frameLength;
    return frame;
  }

  async #advance(): Promise<void> {
    await this.#current?.reader.close();
    this.#current = undefined;
    while (this.#opened.length < this.#prefetch + 1 && this.#next < this.#ranges.length) {
      const range = this.#ranges[this.#next++] as PackRange;
      const body = this.#open(range.start, range.end).then((iterable) => new ByteReader(iterable));
      body.catch(() => undefined); // read (and thrown) when its turn comes
      this.#opened.push({ range, body });
    }
    const next = this.#opened.shift();
    if (!next) throw new ChunkVerificationError('the pack ended before every planned frame was read');
    this.#currentIndex += 1;
    this.#current = { range: next.range, reader: await next.body, at: next.range.start };
  }

  async close(): Promise<void> {
    await this.#current?.reader.close();
    for (const opened of this.#opened.splice(0)) await (await opened.body.catch(() => undefined))?.close();
  }
}

/** Exact-length reads from an async iterable of buffers. */
export class ByteReader {
  readonly #iterator: AsyncIterator<Buffer>;
  #pending: Buffer = Buffer.alloc(0);

  constructor(iterable: AsyncIterable<Buffer>) {
    this.#iterator = iterable[Symbol.asyncIterator]();
  }

  /**
   * The next `length` bytes: a view of what was received when it holds them, else gathered into
   * `into` (which must hold `length` bytes) or into a new buffer.
   */
  async take(length: number, into?: Buffer): Promise<Buffer> {
    if (this.#pending.length >= length) return this.#advance(length);
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    let have = 0;
    while (have < length) {
      if (this.#pending.length === 0) await this.#pull(length - have);
      const piece = this.#advance(Math.min(length - have, this.#pending.length));
      piece.copy(out, have);
      have += piece.length;
    }
    return out;
  }

  /** Drops the next `length` bytes. */
  async skip(length: number): Promise<void> {
    let left = length;
    while (left > 0) {
      if (this.#pending.length === 0) await this.#pull(left);
      left -= this.#advance(Math.min(left, this.#pending.length)).length;
    }
  }

  #advance(length: number): Buffer {
    const piece = this.#pending.subarray(0, length);
    this.#pending = this.#pending.subarray(length);
    return piece;
  }

  async #pull(missing: number): Promise<void> {
    const next = await this.#iterator.next();
    if (next.done) throw new ChunkVerificationError(`the data ended ${missing} bytes early`);
    this.#pending = next.value;
  }

  async close(): Promise<void> {
    await this.#iterator.return?.();
  }
}
