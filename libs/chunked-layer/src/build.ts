import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { constants, zstdCompress, zstdCompressSync } from 'node:zlib';
import { type ChunkIndexMeta, type ChunkRef, encodeIndex, type LayerChunks } from './chunk-index.ts';
import { CHUNKER_ALGORITHM, Chunker, type ChunkSizes, DEFAULT_CHUNK_SIZES } from './fastcdc.ts';
import { TarSplitter } from './tar-split.ts';

const compress = promisify(zstdCompress);

/**
 * zstd level 19 on 1 MiB chunks: measured on a 100 MiB tar of node_modules (docs/decisions.md,
 * "Chunked layers"), 0.79 of gzip -6 at ~0.3 s/MiB of publishing on two cores; level 12 gives 0.87.
 */
export const DEFAULT_ZSTD_LEVEL = 19;
/** Frames compressed at once: zlib's async calls run on libuv's pool, so this uses every core. */
const PARALLEL_FRAMES = 8;

export interface PublishedLayer {
  diffId: string;
  length: number;
  pack: { file: string; length: number; sha256: string };
  index: { file: string; length: number; sha256: string };
  chunks: number;
  /** How long compressing took, for the publisher's log. */
  seconds: number;
}

/** No zstd checksum: every frame is checked against its sha256 from the signed index. */
function zstdOptions(level: number) {
  return { params: { [constants.ZSTD_c_compressionLevel]: level, [constants.ZSTD_c_checksumFlag]: 0 } };
}

/** Reads a layer tar once, splitting it and cutting its contents into chunks; checks its digest. */
async function splitLayer(
  file: string,
  expected: { diffId: string; length: number },
  sizes: ChunkSizes,
  onChunk: (chunk: Buffer) => void,
  onLiteral: (bytes: Buffer) => void,
  drain: () => Promise<void>,
): Promise<number[]> {
  const chunker = new Chunker(onChunk, sizes);
  const splitter = new TarSplitter({ literal: onLiteral, content: (bytes) => chunker.push(bytes) });
  const hash = createHash('sha256');
  let length = 0;
  for await (const piece of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    hash.update(piece as Buffer);
    length += (piece as Buffer).length;
    splitter.push(piece as Buffer);
    await drain();
  }
  splitter.end();
  chunker.end();
  await drain();
  const digest = `sha256:${hash.digest('hex')}`;
  if (digest !== expected.diffId || length !== expected.length) {
    throw new Error(`${file} is ${digest} (${length} bytes), not the layer ${expected.diffId} it should be`);
  }
  return splitter.layout;
}

/**
 * Publishes a layer as a pack of zstd frames, one per chunk, and its chunk index (both to be signed as
 * targets). Streams the layer; memory is a few chunks plus the literals (headers: ~1 KiB per file).
 */
export async function publishLayer(
  file: string,
  expected: { diffId: string; length: number },
  out: { pack: string; index: string },
  options: { level?: number; sizes?: ChunkSizes } = {},
): Promise<PublishedLayer> {
  const started = performance.now();
  const level = options.level ?? DEFAULT_ZSTD_LEVEL;
  const sizes = options.sizes ?? DEFAULT_CHUNK_SIZES;
  const pack = await open(out.pack, 'w');
  const packHash = createHash('sha256');
  let packLength = 0;
  const chunks: ChunkIndexMeta['chunks'] = [];
  const literals: Buffer[] = [];
  let literalsLength = 0;
  // Frames are compressed in parallel and written in order.
  const pending: { raw: Buffer; frame: Promise<Buffer> }[] = [];
  const writeOne = async () => {
    const next = pending.shift();
    if (!next) return;
    const frame = await next.frame;
    await pack.write(frame);
    packHash.update(frame);
    packLength += frame.length;
    chunks.push([
      createHash('sha256').update(next.raw).digest('hex'),
      next.raw.length,
      createHash('sha256').update(frame).digest('hex'),
      frame.length,
    ]);
  };
  let layout: number[];
  try {
    layout = await splitLayer(
      file,
      expected,
      sizes,
      (raw) => pending.push({ raw, frame: compress(raw, zstdOptions(level)) }),
      (bytes) => {
        literals.push(Buffer.from(bytes));
        literalsLength += bytes.length;
      },
      async () => {
        while (pending.length > PARALLEL_FRAMES) await writeOne();
      },
    );
    while (pending.length > 0) await writeOne();
    await pack.sync();
  } finally {
    await Promise.allSettled(pending.map((p) => p.frame));
    await pack.close();
  }
  const meta: ChunkIndexMeta = {
    schema: 1,
    diff_id: expected.diffId,
    length: expected.length,
    chunker: { algorithm: CHUNKER_ALGORITHM, ...sizes },
    compression: 'zstd',
    level,
    pack_length: packLength,
    literals_length: literalsLength,
    layout,
    chunks,
  };
  const index = encodeIndex(
    zstdCompressSync(Buffer.from(JSON.stringify(meta)), zstdOptions(19)),
    zstdCompressSync(Buffer.concat(literals), zstdOptions(19)),
  );
  const handle = await open(out.index, 'w');
  try {
    await handle.write(index);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return {
    diffId: expected.diffId,
    length: expected.length,
    pack: { file: out.pack, length: packLength, sha256: packHash.digest('hex') },
    index: {
      file: out.index,
      length: index.length,
      sha256: createHash('sha256').update(index).digest('hex'),
    },
    chunks: chunks.length,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * The chunks of a layer file already on disk, cut as a publisher with `sizes` cuts them (no
 * compression): how a layer cached before chunked releases existed becomes a source of chunks.
 */
export async function describeLayer(
  file: string,
  expected: { diffId: string; length: number },
  sizes: ChunkSizes = DEFAULT_CHUNK_SIZES,
): Promise<LayerChunks> {
  const chunks: ChunkRef[] = [];
  const layout = await splitLayer(
    file,
    expected,
    sizes,
    (raw) => chunks.push({ sha256: createHash('sha256').update(raw).digest('hex'), length: raw.length }),
    () => undefined,
    async () => undefined,
  );
  return { diffId: expected.diffId, length: expected.length, layout, chunks };
}
