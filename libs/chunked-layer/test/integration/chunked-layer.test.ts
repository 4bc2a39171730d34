import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { makeTempDir } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ChunkCatalog,
  ChunkIndexError,
  type ChunkIndexMeta,
  ChunkVerificationError,
  decodeIndex,
  describeLayer,
  encodeIndex,
  HeldLayer,
  type OpenRange,
  publishLayer,
  rebuildLayer,
} from '../../src/index.ts';

const run = promisify(execFile);
const MIB = 1024 * 1024;
/** Small chunks and a fast level: a test tree of ~14 MiB still makes a few hundred chunks. */
const SIZES = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };
const LEVEL = 3;

let work: string;
const path = (name: string) => join(work, name);

/** A tree like an application layer: many small text files, some binaries, one 1 MiB data file. */
async function makeTree(dir: string): Promise<void> {
  await mkdir(join(dir, 'app', 'lib'), { recursive: true });
  const words = 'update verify chunk layer rollback health signed target release backend'.split(' ');
  for (let i = 0; i < 400; i++) {
    const lines = Array.from(
      { length: 40 + (i % 60) },
      (_, n) => `${words[(i + n) % words.length]} ${i * n} ${'x'.repeat(n % 17)}`,
    );
    await writeFile(join(dir, 'app', 'lib', `module-${i}.js`), lines.join('\n'));
  }
  for (let i = 0; i < 6; i++) await writeFile(join(dir, 'app', `native-${i}.node`), randomBytes(2 * MIB));
  await writeFile(join(dir, 'app', 'data.bin'), randomBytes(MIB));
}

async function tarOf(dir: string, out: string): Promise<{ diffId: string; length: number }> {
  await run('tar', ['--sort=name', '--owner=0', '--group=0', '-C', dir, '-cf', out, '.']);
  const bytes = await readFile(out);
  return { diffId: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, length: bytes.length };
}

async function publish(tar: string, layer: { diffId: string; length: number }, name: string) {
  const published = await publishLayer(
    tar,
    layer,
    { pack: path(`${name}.pack`), index: path(`${name}.cdx`) },
    { level: LEVEL, sizes: SIZES },
  );
  const index = decodeIndex(await readFile(published.index.file), {
    ...layer,
    packLength: published.pack.length,
  });
  return { published, index };
}

/** Serves pack ranges from the file, counting bytes and requests; `cutAfter` fails one read midway. */
function packServer(file: string, options: { cutAfter?: number } = {}) {
  const served = { bytes: 0, requests: 0 };
  let cutAfter = options.cutAfter;
  const openRange: OpenRange = async (start, end) => {
    served.requests += 1;
    const handle = await open(file, 'r');
    return (async function* () {
      try {
        for (let at = start; at < end; ) {
          const length = Math.min(64 * 1024, end - at);
          const bytes = Buffer.alloc(length);
          await handle.read(bytes, 0, length, at);
          if (cutAfter !== undefined && served.bytes + length > cutAfter) {
            cutAfter = undefined;
            throw new Error('connection reset (test cut)');
          }
          served.bytes += length;
          at += length;
          yield bytes;
        }
      } finally {
        await handle.close();
      }
    })();
  };
  return { openRange, served };
}

let v1: { tar: string; layer: { diffId: string; length: number } };
beforeAll(async () => {
  work = await makeTempDir('chunked-layer');
  await makeTree(path('tree'));
  v1 = { tar: path('v1.tar'), layer: await tarOf(path('tree'), path('v1.tar')) };
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('a chunked layer', () => {
  it('rebuilds byte for byte from its pack alone, fetched whole in one request, compressed', async () => {
    const { published, index } = await publish(v1.tar, v1.layer, 'v1');
    const server = packServer(published.pack.file);
    const outcome = await rebuildLayer({
      index,
      catalog: new ChunkCatalog(),
      openRange: server.openRange,
      partial: path('v1.partial'),
      dest: path('v1.rebuilt'),
    });
    expect(outcome.plan.whole).toBe(true);
    expect(server.served).toEqual({ bytes: published.pack.length, requests: 1 });
    expect((await readFile(path('v1.rebuilt'))).equals(await readFile(v1.tar))).toBe(true);
    // Compressed: the text in the tree shrinks (the random binaries cannot; bench:delta compares with gzip).
    expect(published.pack.length + published.index.length).toBeLessThan(v1.layer.length - 512 * 1024);
  });

  it('after one 1 MiB file changed, fetches about that file and rebuilds the new layer exactly', async () => {
    await writeFile(path('tree/app/data.bin'), randomBytes(MIB));
    const v2 = { tar: path('v2.tar'), layer: await tarOf(path('tree'), path('v2.tar')) };
    const { published, index } = await publish(v2.tar, v2.layer, 'v2');
    const catalog = new ChunkCatalog();
    catalog.add(new HeldLayer(v1.tar, await describeLayer(v1.tar, v1.layer, SIZES)));
    const server = packServer(published.pack.file);
    const outcome = await rebuildLayer({
      index,
      catalog,
      openRange: server.openRange,
      partial: path('v2.partial'),
      dest: path('v2.rebuilt'),
    });
    expect(outcome.plan.whole).toBe(false);
    expect(server.served.bytes).toBe(outcome.plan.fetchBytes);
    expect(server.served.bytes).toBeGreaterThan(MIB);
    expect(server.served.bytes).toBeLessThan(1.6 * MIB);
    expect(server.served.requests).toBeLessThanOrEqual(2);
    expect((await readFile(path('v2.rebuilt'))).equals(await readFile(v2.tar))).toBe(true);
  });

  it('after a rebuild with new timestamps (a new digest), fetches no pack bytes at all', async () => {
    const later = new Date('2030-01-01T00:00:00Z');
    const { stdout } = await run('find', [path('tree')]);
    for (const file of stdout.trim().split('\n')) await utimes(file, later, later);
    const v3 = { tar: path('v3.tar'), layer: await tarOf(path('tree'), path('v3.tar')) };
    expect(v3.layer.diffId).not.toBe((await tarDigest(path('v2.rebuilt'))).diffId);
    const { index } = await publish(v3.tar, v3.layer, 'v3');
    const catalog = new ChunkCatalog();
    const held = path('v2.rebuilt');
    catalog.add(new HeldLayer(held, await describeLayer(held, await tarDigest(held), SIZES)));
    const server = packServer(path('v3.pack'));
    await rebuildLayer({
      index,
      catalog,
      openRange: server.openRange,
      partial: path('v3.partial'),
      dest: path('v3.rebuilt'),
    });
    expect(server.served).toEqual({ bytes: 0, requests: 0 });
    expect((await readFile(path('v3.rebuilt'))).equals(await readFile(v3.tar))).toBe(true);
  });

  it('resumes after a cut from its last checkpoint and still produces the verified layer', async () => {
    const { published, index } = await publish(v1.tar, v1.layer, 'v1r');
    const cut = packServer(published.pack.file, { cutAfter: Math.floor(published.pack.length / 2) });
    const options = {
      index,
      catalog: new ChunkCatalog(),
      openRange: cut.openRange,
      partial: path('v1r.partial'),
      dest: path('v1r.rebuilt'),
      checkpointEveryBytes: MIB,
    };
    await expect(rebuildLayer(options)).rejects.toThrow(/test cut/);
    const outcome = await rebuildLayer(options);
    expect(outcome.resumedChunks).toBeGreaterThan(0);
    // Fetched again: only what came after the last checkpoint, not the whole pack.
    expect(cut.served.bytes).toBeLessThan(published.pack.length * 1.25);
    expect((await readFile(path('v1r.rebuilt'))).equals(await readFile(v1.tar))).toBe(true);
  });

  it('fetches a held chunk after all when its layer file was deleted after planning', async () => {
    await writeFile(path('tree/app/data.bin'), randomBytes(MIB));
    const v4 = { tar: path('v4.tar'), layer: await tarOf(path('tree'), path('v4.tar')) };
    const { published, index } = await publish(v4.tar, v4.layer, 'v4');
    await run('cp', [v1.tar, path('held-then-gone.tar')]);
    const catalog = new ChunkCatalog();
    catalog.add(new HeldLayer(path('held-then-gone.tar'), await describeLayer(v1.tar, v1.layer, SIZES)));
    await rm(path('held-then-gone.tar'));
    const server = packServer(published.pack.file);
    const outcome = await rebuildLayer({
      index,
      catalog,
      openRange: server.openRange,
      partial: path('v4.partial'),
      dest: path('v4.rebuilt'),
    });
    expect(outcome.fallbackChunks).toBeGreaterThan(0);
    expect((await readFile(path('v4.rebuilt'))).equals(await readFile(v4.tar))).toBe(true);
  });
});

async function tarDigest(file: string) {
  const bytes = await readFile(file);
  return { diffId: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, length: bytes.length };
}

/** Re-signs (re-encodes) an index after `change`: what a compromised or buggy publisher could sign. */
async function alteredIndex(indexFile: string, change: (meta: ChunkIndexMeta) => void): Promise<Buffer> {
  const bytes = await readFile(indexFile);
  const metaLength = bytes.readUInt32BE(8);
  const meta = JSON.parse(
    zstdDecompressSync(bytes.subarray(12, 12 + metaLength)).toString(),
  ) as ChunkIndexMeta;
  change(meta);
  return encodeIndex(zstdCompressSync(Buffer.from(JSON.stringify(meta))), bytes.subarray(12 + metaLength));
}

describe('attacks on a chunked layer: refused, and nothing lands at the destination', () => {
  it('a pack frame that does not match its signed hash', async () => {
    const { published, index } = await publish(v1.tar, v1.layer, 'a1');
    const pack = await readFile(published.pack.file);
    const victim = index.chunks[3] as (typeof index.chunks)[number];
    pack[victim.packOffset + 5] = (pack[victim.packOffset + 5] as number) ^ 0xff;
    await writeFile(path('a1.bad.pack'), pack);
    const server = packServer(path('a1.bad.pack'));
    await expect(
      rebuildLayer({
        index,
        catalog: new ChunkCatalog(),
        openRange: server.openRange,
        partial: path('a1.partial'),
        dest: path('a1.out'),
      }),
    ).rejects.toThrow(ChunkVerificationError);
    await expect(stat(path('a1.out'))).rejects.toThrow(/ENOENT/);
  });

  it('a chunk index whose meta does not add up, or is for another layer', async () => {
    const { published } = await publish(v1.tar, v1.layer, 'a2');
    const bytes = await alteredIndex(published.index.file, (meta) => {
      meta.layout[1] = (meta.layout[1] as number) + 1;
    });
    expect(() => decodeIndex(bytes, { ...v1.layer, packLength: published.pack.length })).toThrow(
      ChunkIndexError,
    );
    const real = await readFile(published.index.file);
    expect(() => decodeIndex(real, { diffId: `sha256:${'0'.repeat(64)}`, length: v1.layer.length })).toThrow(
      /not this layer/,
    );
    expect(() => decodeIndex(real, { ...v1.layer, packLength: published.pack.length + 1 })).toThrow(
      /signed pack/,
    );
  });

  it('a zstd bomb: a frame signed for a small chunk that decompresses to far more', async () => {
    const { published, index } = await publish(v1.tar, v1.layer, 'a3');
    const bomb = zstdCompressSync(Buffer.alloc(64 * MIB));
    const pack = await readFile(published.pack.file);
    const first = index.chunks[0] as (typeof index.chunks)[number];
    const forged = Buffer.concat([bomb, pack.subarray(first.frameLength)]);
    await writeFile(path('a3.pack'), forged);
    const indexBytes = await alteredIndex(published.index.file, (meta) => {
      const entry = meta.chunks[0] as ChunkIndexMeta['chunks'][number];
      entry[2] = createHash('sha256').update(bomb).digest('hex');
      entry[3] = bomb.length;
      meta.pack_length = forged.length;
    });
    const forgedIndex = decodeIndex(indexBytes, { ...v1.layer, packLength: forged.length });
    const server = packServer(path('a3.pack'));
    await expect(
      rebuildLayer({
        index: forgedIndex,
        catalog: new ChunkCatalog(),
        openRange: server.openRange,
        partial: path('a3.partial'),
        dest: path('a3.out'),
      }),
    ).rejects.toThrow(/more than its signed/);
    await expect(stat(path('a3.out'))).rejects.toThrow(/ENOENT/);
  });

  it('chunks that verify but rebuild a layer other than the signed diff_id', async () => {
    const other = path('other-tree');
    await makeTree(other);
    const otherLayer = await tarOf(other, path('other.tar'));
    const { published } = await publish(path('other.tar'), otherLayer, 'a4');
    // The other layer's index relabelled with v1's digest: every chunk checks out, the whole does not.
    const lying = await alteredIndex(published.index.file, (meta) => {
      meta.diff_id = v1.layer.diffId;
      meta.length = v1.layer.length;
    });
    let index: ReturnType<typeof decodeIndex>;
    try {
      index = decodeIndex(lying, { ...v1.layer, packLength: published.pack.length });
    } catch (error) {
      // Different lengths: the index does not add up, which refuses it just as well.
      expect(error).toBeInstanceOf(ChunkIndexError);
      return;
    }
    const server = packServer(published.pack.file);
    await expect(
      rebuildLayer({
        index,
        catalog: new ChunkCatalog(),
        openRange: server.openRange,
        partial: path('a4.partial'),
        dest: path('a4.out'),
      }),
    ).rejects.toThrow(/not sha256/);
    await expect(stat(path('a4.out'))).rejects.toThrow(/ENOENT/);
    await expect(stat(path('a4.partial'))).rejects.toThrow(/ENOENT/);
  });
});
