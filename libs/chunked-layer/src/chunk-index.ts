import { zstdDecompressSync } from 'node:zlib';
import { z } from 'zod';
import { CHUNKER_ALGORITHM } from './fastcdc.ts';

/*
 * The chunk index of one layer: a signed TUF target, so everything in it is trusted once its bytes
 * match the signed hash. Binary layout:
 *   "AICOCDX1" | u32 BE length of the next part | zstd(JSON meta) | zstd(literals)
 * The meta lists the layout and every chunk (its sha256 and length raw, and its frame in the pack:
 * sha256 and length compressed; frames follow each other, so offsets are sums). The pack is the
 * chunks' zstd frames back to back: itself a valid zstd stream of the layer's file contents.
 */

export const INDEX_MAGIC = Buffer.from('AICOCDX1', 'latin1');
/** A meta larger than this is not an index of ours (a 10 GiB layer needs ~40 MiB). */
const MAX_META_BYTES = 64 * 1024 * 1024;

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const count = z.number().int().nonnegative();

export const chunkIndexMetaSchema = z.object({
  schema: z.literal(1),
  diff_id: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  /** The layer tar's length. */
  length: count,
  chunker: z.object({
    algorithm: z.literal(CHUNKER_ALGORITHM),
    min: count,
    avg: count,
    /** A chunk is held in memory whole while it is rebuilt: 64 MiB at most. */
    max: count.max(64 * 1024 * 1024),
  }),
  compression: z.literal('zstd'),
  level: z.number().int(),
  pack_length: count,
  literals_length: count,
  /** Flat pairs [literal bytes, content bytes] in tar order. */
  layout: z.array(count),
  /** [raw sha256, raw length, frame sha256, frame length] per chunk, in content order. */
  chunks: z.array(z.tuple([hex64, z.number().int().positive(), hex64, z.number().int().positive()])),
});
export type ChunkIndexMeta = z.infer<typeof chunkIndexMetaSchema>;

export interface ChunkRef {
  sha256: string;
  length: number;
}

export interface PackedChunk extends ChunkRef {
  frameSha256: string;
  frameLength: number;
  /** Where the frame starts in the pack. */
  packOffset: number;
}

/** A layer as chunks: enough to read any chunk out of a layer file that is on disk. */
export interface LayerChunks {
  diffId: string;
  length: number;
  layout: readonly number[];
  chunks: readonly ChunkRef[];
}

export interface ChunkIndex extends LayerChunks {
  packLength: number;
  literalsLength: number;
  chunks: readonly PackedChunk[];
  /** The compressed literals, read as the layer is rebuilt. */
  literals: Buffer;
  chunkMax: number;
}

export class ChunkIndexError extends Error {
  override name = 'ChunkIndexError';
}

export function encodeIndex(compressedMeta: Buffer, compressedLiterals: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(compressedMeta.length);
  return Buffer.concat([INDEX_MAGIC, length, compressedMeta, compressedLiterals]);
}

/**
 * Parses an index whose bytes were verified against their signed hash, and checks that it adds up
 * (layout, literals and chunks against the layer's length, frames against the pack's): a publisher's
 * mistake is refused here rather than half-way through a rebuild.
 */
export function decodeIndex(
  bytes: Buffer,
  expected: { diffId: string; length: number; packLength?: number },
): ChunkIndex {
  const fail = (why: string): never => {
    throw new ChunkIndexError(`the chunk index of layer ${expected.diffId} ${why}`);
  };
  if (bytes.length < 12 || !bytes.subarray(0, 8).equals(INDEX_MAGIC))
    fail('is not a chunk index (bad magic)');
  const metaLength = bytes.readUInt32BE(8);
  if (12 + metaLength > bytes.length) fail('is cut short');
  let json: unknown;
  try {
    json = JSON.parse(
      zstdDecompressSync(bytes.subarray(12, 12 + metaLength), { maxOutputLength: MAX_META_BYTES }).toString(
        'utf8',
      ),
    );
  } catch (error) {
    fail(`does not decompress to JSON: ${(error as Error).message}`);
  }
  const parsed = chunkIndexMetaSchema.safeParse(json);
  if (!parsed.success) return fail(`is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const meta = parsed.data;
  if (meta.diff_id !== expected.diffId || meta.length !== expected.length) {
    fail(`describes ${meta.diff_id} (${meta.length} bytes), not this layer (${expected.length} bytes)`);
  }
  if (expected.packLength !== undefined && meta.pack_length !== expected.packLength) {
    fail(`says the pack has ${meta.pack_length} bytes; the signed pack has ${expected.packLength}`);
  }
  if (meta.layout.length % 2 !== 0) fail('has an odd layout');
  let literals = 0;
  let content = 0;
  for (let i = 0; i < meta.layout.length; i += 2) {
    literals += meta.layout[i] as number;
    content += meta.layout[i + 1] as number;
  }
  let raw = 0;
  let packOffset = 0;
  const chunks: PackedChunk[] = meta.chunks.map(([sha256, length, frameSha256, frameLength]) => {
    if (length > meta.chunker.max)
      fail(`has a chunk of ${length} bytes, above its own maximum ${meta.chunker.max}`);
    const chunk = { sha256, length, frameSha256, frameLength, packOffset };
    raw += length;
    packOffset += frameLength;
    return chunk;
  });
  if (literals !== meta.literals_length) fail('lays out more or fewer literal bytes than it holds');
  if (content !== raw) fail('lays out more or fewer content bytes than its chunks hold');
  if (literals + content !== meta.length) fail("does not add up to the layer's length");
  if (packOffset !== meta.pack_length) fail("frames do not add up to the pack's length");
  return {
    diffId: meta.diff_id,
    length: meta.length,
    layout: meta.layout,
    chunks,
    packLength: meta.pack_length,
    literalsLength: meta.literals_length,
    literals: bytes.subarray(12 + metaLength),
    chunkMax: meta.chunker.max,
  };
}

/**
 * Where a layer's content bytes lie in its tar: the content offset at which each layout pair starts,
 * and the tar offset of its content. Built once per layer file used as a chunk source.
 */
export class ContentMap {
  readonly #contentStart: Float64Array;
  readonly #tarStart: Float64Array;
  readonly #contentLength: Float64Array;

  constructor(layout: readonly number[]) {
    const pairs = layout.length / 2;
    this.#contentStart = new Float64Array(pairs);
    this.#tarStart = new Float64Array(pairs);
    this.#contentLength = new Float64Array(pairs);
    let tar = 0;
    let content = 0;
    for (let p = 0; p < pairs; p++) {
      tar += layout[2 * p] as number;
      this.#contentStart[p] = content;
      this.#tarStart[p] = tar;
      const length = layout[2 * p + 1] as number;
      this.#contentLength[p] = length;
      content += length;
      tar += length;
    }
  }

  /** The tar pieces [offset, length] that hold content bytes [offset, offset + length). */
  pieces(offset: number, length: number): [number, number][] {
    const starts = this.#contentStart;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((starts[mid] as number) <= offset) lo = mid;
      else hi = mid - 1;
    }
    const pieces: [number, number][] = [];
    let left = length;
    let at = offset;
    for (let p = lo; left > 0 && p < starts.length; p++) {
      const within = at - (starts[p] as number);
      const take = Math.min((this.#contentLength[p] as number) - within, left);
      if (take <= 0) continue;
      pieces.push([(this.#tarStart[p] as number) + within, take]);
      left -= take;
      at += take;
    }
    return pieces;
  }
}
