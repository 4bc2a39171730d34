import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Chunker, ContentMap, planDelta, TarSplitter } from '../../src/index.ts';

/** Small chunks so a few MiB of test data make many of them. */
const SIZES = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };

function chunksOf(bytes: Buffer, pieceSize: number): string[] {
  const out: string[] = [];
  const chunker = new Chunker((chunk) => out.push(createHash('sha256').update(chunk).digest('hex')), SIZES);
  for (let at = 0; at < bytes.length; at += pieceSize) chunker.push(bytes.subarray(at, at + pieceSize));
  chunker.end();
  return out;
}

describe('the chunker', () => {
  const data = randomBytes(4 * 1024 * 1024);

  it('cuts the same wherever the stream is split into pieces, within its size bounds', () => {
    const sizes: number[] = [];
    const chunker = new Chunker((chunk) => sizes.push(chunk.length), SIZES);
    chunker.push(data);
    chunker.end();
    expect(chunksOf(data, 1000)).toEqual(chunksOf(data, 300_000));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(data.length);
    for (const size of sizes.slice(0, -1)) {
      expect(size).toBeGreaterThanOrEqual(SIZES.min);
      expect(size).toBeLessThanOrEqual(SIZES.max);
    }
    const average = data.length / sizes.length;
    expect(average).toBeGreaterThan(SIZES.avg / 2);
    expect(average).toBeLessThan(SIZES.avg * 2);
  });

  it('after an insertion near the start, realigns: almost every later chunk is unchanged', () => {
    // Usually only the chunk holding the insertion changes; rarely (under 1 % of inputs here) the cut
    // after it lands elsewhere and a few more follow before the cuts realign. Judged over 20 inputs.
    const lost: number[] = [];
    for (let trial = 0; trial < 20; trial++) {
      const input = trial === 0 ? data : randomBytes(data.length);
      const before = chunksOf(input, 65536);
      const edited = Buffer.concat([input.subarray(0, 100_000), randomBytes(777), input.subarray(100_000)]);
      const after = new Set(chunksOf(edited, 65536));
      lost.push(before.filter((hash) => !after.has(hash)).length);
    }
    expect(Math.min(...lost)).toBeGreaterThanOrEqual(1);
    expect(lost.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(40); // of ~64 chunks each: 1.07 on average
  });

  it('refuses sizes that make no sense', () => {
    expect(() => new Chunker(() => undefined, { min: 100, avg: 50, max: 200 })).toThrow(RangeError);
  });
});

/** A minimal ustar header for a regular file of `size` bytes. */
function header(name: string, size: number, type = '0'): Buffer {
  const block = Buffer.alloc(512);
  block.write(name, 0, 'latin1');
  block.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  block.write(type, 156, 'latin1');
  return block;
}

describe('the tar splitter', () => {
  it('sends every byte to exactly one side, contents apart from headers and padding', () => {
    const a = randomBytes(1000);
    const b = randomBytes(512);
    const pax = Buffer.from('30 mtime=1700000000.123456789\n');
    const tar = Buffer.concat([
      header('a', a.length),
      a,
      Buffer.alloc(24),
      header('pax', pax.length, 'x'),
      pax,
      Buffer.alloc(512 - pax.length),
      header('b', b.length),
      b,
      header('dir/', 0, '5'),
      Buffer.alloc(1024),
    ]);
    const literal: Buffer[] = [];
    const content: Buffer[] = [];
    const splitter = new TarSplitter({ literal: (x) => literal.push(x), content: (x) => content.push(x) });
    for (let at = 0; at < tar.length; at += 97) splitter.push(tar.subarray(at, at + 97));
    splitter.end();
    expect(Buffer.concat(content).equals(Buffer.concat([a, b]))).toBe(true);
    // Interleaving the two sides by the layout gives the tar back.
    const lit = Buffer.concat(literal);
    const con = Buffer.concat(content);
    const rebuilt: Buffer[] = [];
    let l = 0;
    let c = 0;
    for (let i = 0; i < splitter.layout.length; i += 2) {
      const literalLength = splitter.layout[i] as number;
      const contentLength = splitter.layout[i + 1] as number;
      rebuilt.push(lit.subarray(l, l + literalLength), con.subarray(c, c + contentLength));
      l += literalLength;
      c += contentLength;
    }
    expect(Buffer.concat(rebuilt).equals(tar)).toBe(true);
    expect(new ContentMap(splitter.layout).pieces(900, 200)).toEqual([
      [512 + 900, 100],
      [512 + 1024 + 512 + 512 + 512, 100],
    ]);
  });
});

describe('the delta plan', () => {
  const chunks = Array.from({ length: 10 }, (_, i) => ({
    sha256: String(i).padStart(64, '0'),
    length: 100_000,
    frameSha256: '',
    frameLength: 40_000,
    packOffset: i * 40_000,
  }));
  const index = { chunks, packLength: 400_000 };

  it('fetches only what is missing, merging runs across small gaps', () => {
    const missing = new Set([chunks[2]?.sha256, chunks[3]?.sha256, chunks[5]?.sha256]);
    const plan = planDelta(index, (sha) => !missing.has(sha));
    expect(plan.whole).toBe(false);
    expect(plan.ranges).toEqual([{ start: 80_000, end: 240_000, first: 2, last: 5 }]);
    expect(plan.fetchBytes).toBe(160_000);
  });

  it('takes the whole pack when a delta would not be smaller (a held chunk inside a merged run saves nothing)', () => {
    const plan = planDelta(index, (sha) => sha === chunks[4]?.sha256);
    expect(planDelta(index, () => false).whole).toBe(true);
    expect(plan).toMatchObject({ whole: true, fetchBytes: 400_000, ranges: [{ start: 0, end: 400_000 }] });
  });

  it('plans nothing when everything is held, and plans from a resume point', () => {
    expect(planDelta(index, () => true)).toMatchObject({ ranges: [], fetchBytes: 0 });
    expect(planDelta(index, () => false, 7).ranges).toEqual([
      { start: 280_000, end: 400_000, first: 7, last: 9 },
    ]);
  });
});
