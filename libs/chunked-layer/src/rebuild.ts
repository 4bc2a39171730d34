import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createZstdDecompress, zstdDecompressSync } from 'node:zlib';
import { type ChunkIndex, ContentMap, type LayerChunks } from './chunk-index.ts';
import { type DeltaPlan, type PackRange, planDelta } from './delta-plan.ts';

/*
 * Rebuilds a layer tar from its chunk index: each chunk from a layer file already held (read where
 * the chunk lies, re-hashed) or from the pack (grouped ranges, a few requests in flight; every frame
 * checked against its signed hash before it is decompressed, decompressed to at most its signed length,
 * then checked again). The tar is written to a partial file with checkpoints, so a cut or a restart
 * resumes from the last one; only a file matching the diff_id is renamed into place.
 */

export class ChunkVerificationError extends Error {
  override name = 'ChunkVerificationError';
}

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

/** Opens pack bytes [start, end) for reading; the caller counts, caps and retries as it must. */
export type OpenRange = (start: number, end: number) => Promise<AsyncIterable<Buffer>>;

export interface RebuildOptions {
  index: ChunkIndex;
  catalog: ChunkCatalog;
  openRange: OpenRange;
  /** The partial tar; `<partial>.checkpoint` beside it records how far it is good. */
  partial: string;
  dest: string;
  /** Requests opened ahead of the one being read. */
  prefetch?: number;
  /** How often the partial file is made durable and its checkpoint written. */
  checkpointEveryBytes?: number;
  signal?: AbortSignal;
}

export interface RebuildOutcome {
  plan: DeltaPlan;
  /** Chunks already in the partial file from an earlier attempt. */
  resumedChunks: number;
  /** Held chunks that could not be read after all and were fetched alone. */
  fallbackChunks: number;
  fallbackBytes: number;
}

interface Checkpoint {
  diff_id: string;
  chunks: number;
  tar_bytes: number;
  content_bytes: number;
}

/** As often as a plain download flushes its partial file: a restart loses at most this much. */
const CHECKPOINT_EVERY_BYTES = 16 * 1024 * 1024;

/** The delta a rebuild would fetch now (resuming where a partial stopped), for progress and disk checks. */
export async function plannedDelta(
  options: Pick<RebuildOptions, 'index' | 'catalog' | 'partial'>,
): Promise<DeltaPlan> {
  const checkpoint = await readCheckpoint(options.partial, options.index.diffId);
  return planDelta(options.index, (sha) => options.catalog.has(sha), checkpoint?.chunks ?? 0);
}

export async function rebuildLayer(options: RebuildOptions): Promise<RebuildOutcome> {
  const { index, partial } = options;
  let checkpoint = await readCheckpoint(partial, index.diffId);
  const partialSize = (await stat(partial).catch(() => undefined))?.size ?? 0;
  if (!checkpoint || partialSize < checkpoint.tar_bytes) checkpoint = undefined;
  const from = checkpoint?.chunks ?? 0;
  const plan = planDelta(index, (sha) => options.catalog.has(sha), from);
  const hash = createHash('sha256');
  const handle = await open(partial, checkpoint ? 'r+' : 'w');
  const outcome: RebuildOutcome = { plan, resumedChunks: from, fallbackChunks: 0, fallbackBytes: 0 };
  try {
    if (checkpoint) {
      await handle.truncate(checkpoint.tar_bytes);
      if (checkpoint.tar_bytes > 0) {
        const stream = handle.createReadStream({ start: 0, end: checkpoint.tar_bytes - 1, autoClose: false });
        for await (const piece of stream) hash.update(piece as Buffer);
      }
    }
    const writer = new TarWriter(handle, hash, index, checkpoint);
    await writer.start();
    const frames = new FrameReader(options.openRange, plan.ranges, options.prefetch ?? 4);
    // Held chunks are read into one reused buffer (the writer has written each before the next).
    let held = Buffer.alloc(0);
    try {
      for (let i = from; i < index.chunks.length; i++) {
        options.signal?.throwIfAborted();
        const chunk = index.chunks[i] as ChunkIndex['chunks'][number];
        let raw: Buffer | undefined;
        if (frames.covers(i)) raw = unpack(chunk, await frames.frame(i, chunk));
        else {
          if (held.length < chunk.length) held = Buffer.allocUnsafe(chunk.length);
          raw = await options.catalog.read(chunk, held);
          if (!raw) {
            // Held when planned, gone now: fetch this one frame on its own.
            const alone = new FrameReader(
              options.openRange,
              [{ start: chunk.packOffset, end: chunk.packOffset + chunk.frameLength, first: i, last: i }],
              0,
            );
            raw = unpack(chunk, await alone.frame(i, chunk));
            outcome.fallbackChunks += 1;
            outcome.fallbackBytes += chunk.frameLength;
          }
        }
        await writer.content(raw);
        if (writer.sinceCheckpoint >= (options.checkpointEveryBytes ?? CHECKPOINT_EVERY_BYTES))
          await writer.checkpoint(partial, i + 1);
      }
    } finally {
      await frames.close();
    }
    await writer.finish();
    const digest = `sha256:${hash.digest('hex')}`;
    if (digest !== index.diffId || writer.tarBytes !== index.length) {
      await handle.close().catch(() => undefined);
      await rm(partial, { force: true });
      await rm(checkpointPath(partial), { force: true });
      throw new ChunkVerificationError(
        `the rebuilt layer is ${digest} (${writer.tarBytes} bytes), not ${index.diffId} (${index.length} bytes): refused`,
      );
    }
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
  await handle.close();
  await rename(partial, options.dest);
  await rm(checkpointPath(partial), { force: true });
  return outcome;
}

function checkpointPath(partial: string): string {
  return `${partial}.checkpoint`;
}

async function readCheckpoint(partial: string, diffId: string): Promise<Checkpoint | undefined> {
  try {
    const value = JSON.parse(await readFile(checkpointPath(partial), 'utf8')) as Partial<Checkpoint>;
    const ok =
      value.diff_id === diffId &&
      [value.chunks, value.tar_bytes, value.content_bytes].every(
        (n) => Number.isSafeInteger(n) && (n as number) >= 0,
      );
    return ok ? (value as Checkpoint) : undefined;
  } catch {
    return undefined;
  }
}

/** A frame checked against its signed hash, then decompressed to at most its signed length and checked. */
function unpack(chunk: ChunkIndex['chunks'][number], frame: Buffer): Buffer {
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
class FrameReader {
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
class ByteReader {
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

/** Writes the tar: literals from the index, content from the chunks, in the order the layout says. */
class TarWriter {
  readonly #handle: FileHandle;
  readonly #hash: Hash;
  readonly #index: ChunkIndex;
  readonly #literals: ByteReader;
  #literalsRead = 0;
  #pair = 0;
  #litLeft = 0;
  #conLeft = 0;
  #buffer: Buffer[] = [];
  #buffered = 0;
  tarBytes: number;
  contentBytes: number;
  sinceCheckpoint = 0;
  readonly #resumeAt: Checkpoint | undefined;

  constructor(handle: FileHandle, hash: Hash, index: ChunkIndex, resumeAt: Checkpoint | undefined) {
    this.#handle = handle;
    this.#hash = hash;
    this.#index = index;
    this.#resumeAt = resumeAt;
    this.tarBytes = resumeAt?.tar_bytes ?? 0;
    this.contentBytes = resumeAt?.content_bytes ?? 0;
    const stream = Readable.from([index.literals]).pipe(createZstdDecompress());
    this.#literals = new ByteReader(stream as AsyncIterable<Buffer>);
    this.#litLeft = index.layout[0] ?? 0;
    this.#conLeft = index.layout[1] ?? 0;
  }

  /** On a resume, moves through the layout (and the literals) to where the checkpoint stopped. */
  async start(): Promise<void> {
    const at = this.#resumeAt;
    if (!at) return;
    let literals = at.tar_bytes - at.content_bytes;
    let content = at.content_bytes;
    while (literals > 0 || content > 0) {
      if (this.#litLeft > 0 && literals > 0) {
        const take = Math.min(this.#litLeft, literals);
        await this.#readLiterals(take);
        this.#litLeft -= take;
        literals -= take;
      } else if (this.#litLeft === 0 && this.#conLeft > 0 && content > 0) {
        const take = Math.min(this.#conLeft, content);
        this.#conLeft -= take;
        content -= take;
      } else if (this.#litLeft === 0 && this.#conLeft === 0) this.#nextPair();
      else throw new ChunkVerificationError('the checkpoint does not fit the layout; starting over');
    }
  }

  async content(raw: Buffer): Promise<void> {
    let at = 0;
    while (at < raw.length) {
      await this.#flushLiterals();
      const take = Math.min(this.#conLeft, raw.length - at);
      if (take === 0) throw new ChunkVerificationError('the chunks hold more content than the layout places');
      this.#write(raw.subarray(at, at + take));
      this.#conLeft -= take;
      this.contentBytes += take;
      at += take;
    }
    // Written before the next chunk: the caller may reuse `raw`'s memory for it.
    await this.#drain();
  }

  async checkpoint(partial: string, chunks: number): Promise<void> {
    await this.#drain();
    await this.#handle.sync();
    const value: Checkpoint = {
      diff_id: this.#index.diffId,
      chunks,
      tar_bytes: this.tarBytes,
      content_bytes: this.contentBytes,
    };
    await writeFile(`${checkpointPath(partial)}.tmp`, JSON.stringify(value));
    await rename(`${checkpointPath(partial)}.tmp`, checkpointPath(partial));
    this.sinceCheckpoint = 0;
  }

  async finish(): Promise<void> {
    await this.#flushLiterals();
    if (this.#conLeft > 0 || this.#pair < this.#index.layout.length / 2 - 1) {
      throw new ChunkVerificationError('the chunks ended before the layout did');
    }
    await this.#drain();
    await this.#literals.close();
  }

  /** Writes the literals due before the next content byte (and the trailing ones at the end). */
  async #flushLiterals(): Promise<void> {
    for (;;) {
      if (this.#litLeft > 0) {
        const bytes = await this.#readLiterals(this.#litLeft);
        this.#write(bytes);
        this.#litLeft = 0;
      }
      if (this.#conLeft > 0 || !this.#nextPair()) return;
    }
  }

  async #readLiterals(length: number): Promise<Buffer> {
    if (this.#literalsRead + length > this.#index.literalsLength) {
      throw new ChunkVerificationError('the layout asks for more literal bytes than the index holds');
    }
    this.#literalsRead += length;
    return this.#literals.take(length);
  }

  #nextPair(): boolean {
    if (this.#pair + 1 >= this.#index.layout.length / 2) return false;
    this.#pair += 1;
    this.#litLeft = this.#index.layout[2 * this.#pair] as number;
    this.#conLeft = this.#index.layout[2 * this.#pair + 1] as number;
    return true;
  }

  #write(bytes: Buffer): void {
    this.#hash.update(bytes);
    this.#buffer.push(bytes);
    this.#buffered += bytes.length;
    this.tarBytes += bytes.length;
    this.sinceCheckpoint += bytes.length;
  }

  async #drain(): Promise<void> {
    if (this.#buffered === 0) return;
    // One gathered write of the pieces as they are: no copy of every byte into a joined buffer.
    const pieces = this.#buffer;
    const position = this.tarBytes - this.#buffered;
    this.#buffer = [];
    this.#buffered = 0;
    const { bytesWritten } = await this.#handle.writev(pieces, position);
    const expected = pieces.reduce((sum, piece) => sum + piece.length, 0);
    if (bytesWritten !== expected) {
      // A short gathered write (rare: a signal, a nearly full disk): finish it piece by piece.
      let at = position;
      for (const piece of pieces) {
        await this.#handle.write(piece, 0, piece.length, at);
        at += piece.length;
      }
    }
  }
}
