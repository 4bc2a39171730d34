import type { ChunkIndex } from './chunk-index.ts';

/*
 * Which bytes of a pack to fetch, given the chunks already held: runs of missing frames, merged across
 * small gaps (a gap costs its bytes, a request costs a round trip), or the whole pack when a delta
 * would not be smaller. Pure.
 */

/** Held frames between two missing runs shorter than this are fetched with them: one request, not two. */
export const MERGE_GAP_BYTES = 64 * 1024;
/** What one extra request is worth in bytes when judging a delta against the whole pack. */
export const REQUEST_COST_BYTES = 16 * 1024;

export interface PackRange {
  /** Pack bytes [start, end). */
  start: number;
  end: number;
  /** Chunks [first, last] whose frames the range covers, in full. */
  first: number;
  last: number;
}

export interface DeltaPlan {
  ranges: PackRange[];
  /** Pack bytes on the wire. */
  fetchBytes: number;
  /** Raw bytes taken from chunks already held. */
  heldBytes: number;
  whole: boolean;
}

export function planDelta(
  index: Pick<ChunkIndex, 'chunks' | 'packLength'>,
  isHeld: (sha256: string) => boolean,
  fromChunk = 0,
): DeltaPlan {
  const ranges: PackRange[] = [];
  let heldBytes = 0;
  const chunks = index.chunks;
  for (let i = fromChunk; i < chunks.length; i++) {
    const chunk = chunks[i];
    if (!chunk) continue;
    if (isHeld(chunk.sha256)) {
      heldBytes += chunk.length;
      continue;
    }
    const start = chunk.packOffset;
    const end = start + chunk.frameLength;
    const last = ranges.at(-1);
    if (last && start - last.end <= MERGE_GAP_BYTES) {
      last.end = end;
      last.last = i;
    } else ranges.push({ start, end, first: i, last: i });
  }
  const fetchBytes = ranges.reduce((sum, r) => sum + r.end - r.start, 0);
  const first = chunks[fromChunk];
  const restOfPack = first ? index.packLength - first.packOffset : 0;
  if (first && fetchBytes + ranges.length * REQUEST_COST_BYTES >= restOfPack) {
    return {
      ranges: [{ start: first.packOffset, end: index.packLength, first: fromChunk, last: chunks.length - 1 }],
      fetchBytes: restOfPack,
      heldBytes: 0,
      whole: true,
    };
  }
  return { ranges, fetchBytes, heldBytes, whole: false };
}
