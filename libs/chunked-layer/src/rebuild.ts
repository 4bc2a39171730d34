import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createZstdDecompress } from 'node:zlib';
import type { ChunkCatalog } from './chunk-catalog.ts';
import type { ChunkIndex } from './chunk-index.ts';
import { type DeltaPlan, planDelta } from './delta-plan.ts';
import { ByteReader, ChunkVerificationError, FrameReader, type OpenRange, unpack } from './pack-reader.ts';

/*
 * Rebuilds a layer tar from its chunk index: each chunk from a layer file already held (read where
 * the chunk lies, re-hashed) or from the pack (grouped ranges, a few requests in flight; every frame
 * checked against its signed hash before it is decompressed, decompressed to at most its signed length,
 * then checked again). The tar is written to a partial file with checkpoints, so a cut or a restart
 * resumes from the last one; only a file matching the diff_id is renamed into place.
 */

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
