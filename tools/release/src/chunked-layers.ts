import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_ZSTD_LEVEL, publishLayer } from '@aico-update/chunked-layer';
import type { ExtractedBlob } from '@aico-update/image-archive';
import { type BlobRef, chunkedTargetPaths } from '@aico-update/shared';

/*
 * A layer published chunked: its pack (one zstd frame per content-defined chunk) and its chunk index
 * become two more signed targets beside the plain layer blob. Clients of this version fetch the chunks
 * they lack from the pack; older clients keep fetching the plain blob. The index's target entry names
 * the layer it describes, so a later release reusing the layer reuses its chunked form without
 * compressing it again.
 */

export type TargetEntry = {
  length: number;
  hashes: Record<string, string>;
  custom?: Record<string, unknown>;
};
type StoreTarget = (
  target: string,
  sha256: string,
  write: (dest: string) => Promise<unknown>,
) => Promise<void>;

export interface LayerPublishing {
  /** `plain`: the layer blob only (what releases before chunking had). Default `chunked`. */
  layers?: 'plain' | 'chunked';
  /** zstd level of the pack's frames; default 19 (docs/decisions.md, "Chunked layers"). */
  zstdLevel?: number;
}

export function checkZstdLevel(level: number | undefined): number {
  const chosen = level ?? DEFAULT_ZSTD_LEVEL;
  if (!Number.isInteger(chosen) || chosen < 1 || chosen > 22) {
    throw new RangeError(`zstd level ${level} is not allowed; use a whole number from 1 to 22 (default 19)`);
  }
  return chosen;
}

/** The chunked form an earlier release published for this layer, read from the targets' entries. */
function publishedChunked(targets: Record<string, TargetEntry>, digest: string): BlobRef['chunked'] {
  for (const [target, entry] of Object.entries(targets)) {
    const marker = entry.custom?.aico_chunked as { layer?: string; pack?: string } | undefined;
    if (marker?.layer !== digest || !marker.pack) continue;
    const pack = targets[marker.pack];
    const indexSha = entry.hashes.sha256;
    const packSha = pack?.hashes.sha256;
    if (!pack || !indexSha || !packSha) continue;
    return {
      index: { target, length: entry.length, sha256: indexSha },
      pack: { target: marker.pack, length: pack.length, sha256: packSha },
    };
  }
  return undefined;
}

/**
 * Publishes the layer's pack and index as targets, unless an earlier release did; returns the
 * manifest's `chunked` reference. Must run before the layer file is moved into the repository.
 */
export async function stageChunkedLayer(
  targets: Record<string, TargetEntry>,
  layer: ExtractedBlob,
  work: string,
  level: number,
  store: StoreTarget,
): Promise<NonNullable<BlobRef['chunked']>> {
  const known = publishedChunked(targets, layer.digest);
  if (known) return known;
  const name = layer.digest.slice('sha256:'.length);
  const published = await publishLayer(
    layer.file,
    { diffId: layer.digest, length: layer.length },
    { pack: join(work, `${name}.pack`), index: join(work, `${name}.index`) },
    { level },
  );
  const paths = chunkedTargetPaths(published.pack.sha256, published.index.sha256);
  await store(paths.pack, published.pack.sha256, (dest) => rename(published.pack.file, dest));
  await store(paths.index, published.index.sha256, (dest) => rename(published.index.file, dest));
  targets[paths.pack] = { length: published.pack.length, hashes: { sha256: published.pack.sha256 } };
  targets[paths.index] = {
    length: published.index.length,
    hashes: { sha256: published.index.sha256 },
    custom: { aico_chunked: { layer: layer.digest, pack: paths.pack } },
  };
  return {
    index: { target: paths.index, length: published.index.length, sha256: published.index.sha256 },
    pack: { target: paths.pack, length: published.pack.length, sha256: published.pack.sha256 },
  };
}
