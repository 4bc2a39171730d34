import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { zstdCompressSync } from 'node:zlib';
import { CHUNKER_ALGORITHM, decodeIndex, encodeIndex } from '@aico-update/chunked-layer';
import { writeImageArchive } from '@aico-update/image-archive';
import type { AddReleaseInput } from '@aico-update/release';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  chunkedTargetPaths,
  type DownloadComplete,
  type DownloadProgress,
  type ReleaseManifest,
  StateKeys,
  Subjects,
  Topics,
} from '@aico-update/shared';
import {
  docker,
  importFolder,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
  testTag,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RunningDownloader } from '../../src/main.ts';
import { releaseRef, runDownloadJob, startTestDownloader } from '../support/harness.ts';

/*
 * Layers published chunked (the publisher's default), through the real downloader: a real HTTPS TUF
 * repository serving byte ranges, real Redis and NATS, real images from the Docker Engine.
 */

const KIB = 1024;
/**
 * Every file's content comes from a seed and every timestamp is pinned, so a layer is the same bytes on
 * every run and machine (importFolder's tar sorts by name): how many chunks a change touches is a fact
 * of the chunker, asserted exactly, not a matter of luck.
 */
const PINNED = new Date('2026-01-01T00:00:00Z');
const seeded = (seed: string, length: number) =>
  createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(
    Buffer.alloc(length),
  );
async function writePinned(name: string, content: string | Buffer): Promise<void> {
  await writeFile(join(rootfs, 'app', name), content);
  await utimes(join(rootfs, 'app', name), PINNED, PINNED);
}
let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let t: TestRepository;
let rootfs: string;
let completes: DownloadComplete[];
let progress: DownloadProgress[];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  nc.subscribe(Subjects.event(Topics.downloadComplete), {
    callback: (_e, m) => void completes.push(m.json()),
  });
  nc.subscribe(Subjects.event(Topics.downloadProgress), {
    callback: (_e, m) => void progress.push(m.json()),
  });
});

afterAll(async () => {
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

beforeEach(async () => {
  completes = [];
  progress = [];
  await redisClient.flushall();
  t = await startTestRepository();
  rootfs = await makeTempDir('rootfs');
  // 64 files of 256 KiB: 16 MiB of content, about 16 chunks at the publisher's 1 MiB average, so that
  // a change of a few chunks is a delta, not the whole pack.
  await mkdir(join(rootfs, 'app'), { recursive: true });
  for (let i = 0; i < 64; i++) await writePinned(`part-${i}.bin`, seeded(`part-${i}`, 256 * KIB));
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  await t.close();
  await rm(rootfs, { recursive: true, force: true });
});

async function downloader(): Promise<RunningDownloader> {
  const d = await startTestDownloader(t, redis, nats, { AICO_DOWNLOADER_PROGRESS_INTERVAL_MS: '50' });
  cleanups.push(() => d.stop());
  return d;
}

const published = new Map<string, ReleaseManifest>();

/** Imports `rootfs` as a one-layer image, saves it and publishes it as backend `version` (level 3: fast). */
async function publishImage(
  version: string,
  release: Partial<AddReleaseInput> = {},
): Promise<{ imageId: string; manifest: ReleaseManifest }> {
  const tag = testTag('aico-test/chunked', version);
  for (const dir of [rootfs, join(rootfs, 'app')]) await utimes(dir, PINNED, PINNED);
  const imageId = await importFolder(rootfs, tag);
  cleanups.push(() => docker('rmi', '-f', tag));
  const archive = join(t.workDir, `backend-${version}.tar`);
  await docker('save', '-o', archive, tag);
  const manifest = await t.repo.addRelease({
    component: 'backend',
    version,
    channel: 'stable',
    artifacts: [],
    images: [{ service: 'backend', archive }],
    zstdLevel: 3,
    ...release,
  });
  published.set(version, manifest);
  return { imageId, manifest };
}

async function download(version: string) {
  return runDownloadJob(redisClient, redis.url, {
    v: 1,
    release: await releaseRef(t, 'backend', version),
    reason: 'request',
  });
}

/** The manifest a release was signed with, as the publisher returned it. */
async function manifestOf(version: string): Promise<ReleaseManifest> {
  const manifest = published.get(version);
  if (!manifest) throw new Error(`backend ${version} was not published by this test`);
  return manifest;
}

async function layerOf(version: string) {
  const layer = (await manifestOf(version)).images[0]?.layers[0];
  if (!layer?.chunked) throw new Error(`backend ${version} has no chunked layer`);
  return { ...layer, chunked: layer.chunked };
}

/** A layer's chunk index, as the server holds it (the test reads what the publisher signed). */
async function indexOf(layer: Awaited<ReturnType<typeof layerOf>>) {
  const bytes = await readFile(servedFile(layer.chunked.index.target, layer.chunked.index.sha256));
  return decodeIndex(bytes, { diffId: layer.digest, length: layer.length });
}

/** Where the server keeps a target's bytes (consistent snapshots: its hash in its name). */
function servedFile(target: string, sha256: string): string {
  return join(t.repo.publicDir, 'targets', dirname(target), `${sha256}.${basename(target)}`);
}

const cache = () => join(t.workDir, 'cache');
const sha = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const packRequests = () => t.faults.requests.filter((r) => r.path.startsWith('/targets/packs/'));
const plainBlobRequests = (digest: string) =>
  t.faults.requests.filter((r) => r.path.includes(`/targets/blobs/sha256/${digest.slice(7)}`));

/** A chunk index and pack for `layer` whose frames each decompress to 256 MiB, signed as 1 MiB chunks. */
function forgeBomb(layer: { digest: string; length: number }) {
  const bomb = zstdCompressSync(Buffer.alloc(256 * 1024 * KIB));
  const literals = 512;
  const chunkLength = 1024 * KIB;
  const chunks = Math.ceil((layer.length - literals) / chunkLength);
  const meta = {
    schema: 1,
    diff_id: layer.digest,
    length: layer.length,
    chunker: { algorithm: CHUNKER_ALGORITHM, min: 1, avg: chunkLength, max: chunkLength },
    compression: 'zstd',
    level: 3,
    pack_length: bomb.length * chunks,
    literals_length: literals,
    layout: [literals, layer.length - literals],
    chunks: Array.from({ length: chunks }, (_, i) => [
      sha(Buffer.from(`chunk ${i}`)),
      i === chunks - 1 ? layer.length - literals - chunkLength * (chunks - 1) : chunkLength,
      sha(bomb),
      bomb.length,
    ]),
  };
  const index = encodeIndex(
    zstdCompressSync(Buffer.from(JSON.stringify(meta))),
    zstdCompressSync(Buffer.alloc(literals)),
  );
  const pack = Buffer.concat(Array.from({ length: chunks }, () => bomb));
  return { index, pack, paths: chunkedTargetPaths(sha(pack), sha(index)) };
}

describe('chunked layers', () => {
  it('a first install fetches the compressed pack, not the layer; a changed file moves only its chunks; a rebuild with new timestamps moves no pack bytes; each layer is verified and loads as the same image', async () => {
    await writePinned('text.txt', 'the companion remembers\n'.repeat(40_000)); // compressible
    await publishImage('1.0.0');
    await downloader();
    const v1 = await layerOf('1.0.0');
    expect(v1.chunked.pack.length).toBeLessThan(v1.length);
    expect((await download('1.0.0')).state).toBe('completed');
    expect(plainBlobRequests(v1.digest)).toEqual([]);
    expect(packRequests().reduce((n, r) => n + r.bytes, 0)).toBe(v1.chunked.pack.length);
    expect(sha(await readFile(join(cache(), 'blobs', v1.digest.slice(7))))).toBe(v1.digest.slice(7));
    // Progress counts the bytes on the wire against what the delta will move, known before it starts.
    const first = progress.filter((p) => p.version === '1.0.0');
    expect(first.at(-1)).toMatchObject({ status: 'completed', percent: 100 });
    expect(first.every((p) => p.total_bytes === (first[0] as DownloadProgress).total_bytes)).toBe(true);
    expect(first[0]?.total_bytes).toBe(
      v1.chunked.pack.length + (await manifestOf('1.0.0')).images[0]!.config.length,
    );

    // One 256 KiB file changes: a new layer, of which little is fetched, in few requests.
    await writePinned('part-17.bin', seeded('part-17 changed', 256 * KIB));
    await publishImage('1.1.0');
    t.faults.resetRequests();
    expect((await download('1.1.0')).state).toBe('completed');
    const v2 = await layerOf('1.1.0');
    expect(v2.digest).not.toBe(v1.digest);
    // Exactly the frames of chunks 1.0.0 does not hold (plus held frames inside merged runs, < 64 KiB
    // each), and few of them: the change touches the chunk it lands in and at most the next two.
    const [old, fresh] = await Promise.all([indexOf(v1), indexOf(v2)]);
    const held = new Set(old.chunks.map((c) => c.sha256));
    const missing = fresh.chunks.filter((c) => !held.has(c.sha256));
    const missingBytes = missing.reduce((n, c) => n + c.frameLength, 0);
    expect(missing.length).toBeGreaterThan(0);
    expect(missing.length).toBeLessThanOrEqual(3);
    const fetched = packRequests().reduce((n, r) => n + r.bytes, 0);
    expect(fetched).toBeGreaterThanOrEqual(missingBytes);
    expect(fetched).toBeLessThanOrEqual(missingBytes + packRequests().length * 64 * KIB);
    expect(packRequests().every((r) => r.status === 206 && /^bytes=\d+-\d+$/.test(r.range ?? ''))).toBe(true);
    expect(packRequests().length).toBeLessThanOrEqual(missing.length);
    expect(sha(await readFile(join(cache(), 'blobs', v2.digest.slice(7))))).toBe(v2.digest.slice(7));
    const heldRaw = fresh.chunks.filter((c) => held.has(c.sha256)).reduce((n, c) => n + c.length, 0);
    expect(completes.at(-1)?.bytes_reused).toBe(heldRaw);

    // The same files rebuilt with new timestamps: a new digest, and not one pack byte fetched.
    const later = new Date(PINNED.getTime() + 86_400_000);
    for (const name of await readdir(join(rootfs, 'app')))
      await utimes(join(rootfs, 'app', name), later, later);
    const { imageId } = await publishImage('1.2.0');
    t.faults.resetRequests();
    expect((await download('1.2.0')).state).toBe('completed');
    const v3 = await layerOf('1.2.0');
    expect(v3.digest).not.toBe(v2.digest);
    expect(packRequests()).toEqual([]);

    // The rebuilt blobs assemble into the image the publisher saved, and the engine loads it.
    const manifest = await manifestOf('1.2.0');
    const image = manifest.images[0]!;
    const blob = (b: { digest: string; length: number }) => ({
      ...b,
      file: join(cache(), 'blobs', b.digest.slice(7)),
    });
    await docker('rmi', '-f', testTag('aico-test/chunked', '1.2.0'));
    const assembled = join(t.workDir, 'assembled.tar');
    await writeImageArchive(
      { imageId: image.image_id, repoTags: [], config: blob(image.config), layers: image.layers.map(blob) },
      assembled,
    );
    await docker('load', '-i', assembled);
    cleanups.push(() => docker('rmi', '-f', imageId));
    expect(await docker('image', 'inspect', '--format', '{{.Id}}', imageId)).toBe(imageId);
  }, 120_000);

  it('a pack frame altered on the server is refused before it is decompressed: nothing reaches blobs/, and the next try after the repair succeeds', async () => {
    await publishImage('1.0.0');
    await downloader();
    const layer = await layerOf('1.0.0');
    const file = servedFile(layer.chunked.pack.target, layer.chunked.pack.sha256);
    const original = await readFile(file);
    const handle = await open(file, 'r+');
    await handle.write(Buffer.from([original[1000]! ^ 0xff]), 0, 1, 1000);
    await handle.close();
    const failed = await download('1.0.0');
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(/does not match its signed sha256/);
    expect(await readdir(join(cache(), 'blobs'))).not.toContain(layer.digest.slice(7));

    await writeFile(file, original);
    await redisClient.flushall();
    expect((await download('1.0.0')).state).toBe('completed');
    expect(sha(await readFile(join(cache(), 'blobs', layer.digest.slice(7))))).toBe(layer.digest.slice(7));
  }, 60_000);

  it('a chunk index that does not match its signed hash is refused: no index kept, no layer, no pack byte fetched', async () => {
    await publishImage('1.0.0');
    await downloader();
    const layer = await layerOf('1.0.0');
    const file = servedFile(layer.chunked.index.target, layer.chunked.index.sha256);
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
    await writeFile(file, bytes);
    const failed = await download('1.0.0');
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(/sha256|hash/i);
    expect(await readdir(join(cache(), 'indexes'))).toEqual([]);
    expect(await readdir(join(cache(), 'blobs'))).not.toContain(layer.digest.slice(7));
    expect(packRequests()).toEqual([]);
  }, 60_000);

  it('a chunk index forged in the cache (another writer of the volume) is not believed: fetched again, the release downloads', async () => {
    await publishImage('1.0.0');
    await downloader();
    expect((await download('1.0.0')).state).toBe('completed');
    // 1.1.0 reuses 1.0.0's layer (the same files); its cached index is replaced by a well-formed one for
    // the same layer that is not the signed one (a bomb).
    const { manifest } = await publishImage('1.1.0');
    const layer = manifest.images[0]?.layers[0] as NonNullable<(typeof manifest.images)[0]['layers'][0]>;
    expect(layer.digest).toBe((await layerOf('1.0.0')).digest);
    await writeFile(join(cache(), 'indexes', layer.digest.slice(7)), forgeBomb(layer).index);
    expect((await download('1.1.0')).state).toBe('completed');
    expect(sha(await readFile(join(cache(), 'indexes', layer.digest.slice(7))))).toBe(
      layer.chunked?.index.sha256,
    );
    expect(sha(await readFile(join(cache(), 'blobs', layer.digest.slice(7))))).toBe(layer.digest.slice(7));
  }, 60_000);

  it('a zstd bomb signed into a release (a compromised publisher): decompression stops at the signed chunk length; nothing reaches blobs/, the cache stays valid', async () => {
    // What an attacker holding the targets key could publish: chunks signed as 1 MiB whose frames
    // each decompress to 256 MiB of zeros.
    let forged: { pack: Buffer; index: Buffer; paths: { pack: string; index: string } } | undefined;
    const { manifest } = await publishImage('6.6.6', {
      alterManifest: (m) => ({
        ...m,
        images: m.images.map((image) => ({
          ...image,
          layers: image.layers.map((layer) => {
            forged = forgeBomb(layer);
            return {
              ...layer,
              chunked: {
                index: { target: forged.paths.index, length: forged.index.length, sha256: sha(forged.index) },
                pack: { target: forged.paths.pack, length: forged.pack.length, sha256: sha(forged.pack) },
              },
            };
          }),
        })),
      }),
    });
    const bomb = forged as NonNullable<typeof forged>;
    const targets = await t.repo.readTargets();
    for (const [target, bytes] of [
      [bomb.paths.pack, bomb.pack],
      [bomb.paths.index, bomb.index],
    ] as const) {
      await mkdir(dirname(servedFile(target, sha(bytes))), { recursive: true });
      await writeFile(servedFile(target, sha(bytes)), bytes);
      targets.targets[target] = { length: bytes.length, hashes: { sha256: sha(bytes) } };
    }
    await t.repo.publishTargets(targets, {});
    const digest = manifest.images[0]?.layers[0]?.digest as string;
    const d = await downloader();
    const failed = await download('6.6.6');
    expect(failed.state).toBe('failed');
    expect(failed.error).toMatch(/decompresses to more than its signed 1048576 bytes/);
    expect(await readdir(join(cache(), 'blobs'))).not.toContain(digest.slice(7));
    for (const name of await readdir(join(cache(), 'blobs')))
      expect(sha(await readFile(join(cache(), 'blobs', name)))).toBe(name);
    // The service is still there and well: its memory did not follow the bomb.
    expect((await fetch(`http://127.0.0.1:${d.port}/readyz`)).ok).toBe(true);
  }, 60_000);

  it('a pack download cut half-way resumes from where it was cut, fetching the pack about once', async () => {
    await publishImage('1.0.0');
    await downloader();
    const layer = await layerOf('1.0.0');
    t.faults.add(
      /\/targets\/packs\//,
      { kind: 'cut', afterBytes: Math.floor(layer.chunked.pack.length / 2) },
      1,
    );
    expect((await download('1.0.0')).state).toBe('completed');
    expect(packRequests().length).toBe(2);
    expect(packRequests()[1]?.range).toMatch(/^bytes=[1-9]\d*-\d+$/);
    expect(packRequests().reduce((n, r) => n + r.bytes, 0)).toBeLessThanOrEqual(layer.chunked.pack.length);
    expect(sha(await readFile(join(cache(), 'blobs', layer.digest.slice(7))))).toBe(layer.digest.slice(7));
  }, 60_000);

  it('a cached layer damaged by hand (its chunks gone): the delta fetches those chunks instead and still produces the verified layer', async () => {
    await publishImage('1.0.0');
    await downloader();
    expect((await download('1.0.0')).state).toBe('completed');
    const v1 = await layerOf('1.0.0');
    await writePinned('part-3.bin', seeded('part-3 changed', 256 * KIB));
    await publishImage('1.1.0');
    // Zero the second half of the cached 1.0.0 layer: its index still says it holds those chunks.
    const held = join(cache(), 'blobs', v1.digest.slice(7));
    const handle = await open(held, 'r+');
    await handle.write(Buffer.alloc(v1.length / 2), 0, v1.length / 2, v1.length / 2);
    await handle.close();
    t.faults.resetRequests();
    expect((await download('1.1.0')).state).toBe('completed');
    const v2 = await layerOf('1.1.0');
    expect(sha(await readFile(join(cache(), 'blobs', v2.digest.slice(7))))).toBe(v2.digest.slice(7));
    // More than the planned delta was fetched: the damaged chunks, one by one.
    expect(packRequests().length).toBeGreaterThan(1);
  }, 60_000);

  it('garbage collection removes a layer no kept release needs together with its chunk index', async () => {
    await publishImage('1.0.0');
    await writePinned('part-5.bin', seeded('part-5 changed', 256 * KIB));
    await publishImage('1.1.0');
    await writePinned('part-6.bin', seeded('part-6 changed', 256 * KIB));
    await publishImage('1.2.0');
    await downloader();
    for (const version of ['1.0.0', '1.1.0']) expect((await download(version)).state).toBe('completed');
    const [v1, v2, v3] = [await layerOf('1.0.0'), await layerOf('1.1.0'), await layerOf('1.2.0')];
    expect((await readdir(join(cache(), 'indexes'))).sort()).toEqual(
      [v1.digest.slice(7), v2.digest.slice(7)].sort(),
    );
    await redisClient.hset(StateKeys.installed, 'backend', '1.1.0');
    expect((await download('1.2.0')).state).toBe('completed');
    const kept = [v2.digest.slice(7), v3.digest.slice(7)].sort();
    expect((await readdir(join(cache(), 'indexes'))).sort()).toEqual(kept);
    const blobs = await readdir(join(cache(), 'blobs'));
    expect(blobs).not.toContain(v1.digest.slice(7));
    for (const layer of kept) expect(blobs).toContain(layer);
  }, 60_000);

  it('a release published before chunking (plain layers) still downloads, as the plain blobs', async () => {
    await publishImage('0.9.0', { layers: 'plain' });
    await downloader();
    const layer = (await manifestOf('0.9.0')).images[0]?.layers[0];
    expect(layer?.chunked).toBeUndefined();
    expect((await download('0.9.0')).state).toBe('completed');
    expect(plainBlobRequests(layer!.digest).length).toBe(1);
    expect(packRequests()).toEqual([]);
    expect(sha(await readFile(join(cache(), 'blobs', layer!.digest.slice(7))))).toBe(layer!.digest.slice(7));
  }, 60_000);
});
