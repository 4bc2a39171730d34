import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { artifactTargetPath } from '@aico-update/shared';
import { mountSmallDisk } from '@aico-update/shared/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RateLimiter, type TufSession } from '../../src/index.ts';
import { type ClientUnderTest, clientFor, rejection } from '../support/client.ts';

/* Large targets: resumable, verified while streaming, renamed into place only when verified. */

const SIZE = 3 * 1024 * 1024;
const TARGET = artifactTargetPath('backend', '1.0.0', 'backend-1.0.0.bin');
let t: TestRepository;
let c: ClientUnderTest;
let expected: Buffer;
let servedPath: string;
let dest: string;
let partialDir: string;

beforeEach(async () => {
  t = await startTestRepository();
  await t.publish({ component: 'backend', version: '1.0.0', channel: 'stable', size: SIZE });
  expected = Buffer.alloc(SIZE, '1.0.0');
  c = clientFor(t);
  const sha256 = (await t.repo.readTargets()).targets[TARGET]?.hashes.sha256;
  servedPath = `/targets/artifacts/backend/1.0.0/${sha256}.backend-1.0.0.bin`;
  dest = join(t.workDir, 'blob');
  partialDir = join(t.workDir, 'partials');
});

afterEach(async () => {
  await c.fetcher.close();
  await t.close();
});

function download(use?: (s: TufSession) => Promise<void>) {
  return c.client.session(async (s) => {
    await use?.(s);
    const info = await s.targetInfo(TARGET);
    return s.downloadTarget(info!, dest, { partialDir });
  });
}

const rangeRequests = () =>
  t.faults.requests.filter((r) => r.path === servedPath && r.range).map((r) => r.range);

describe('downloadTarget', () => {
  it('downloads and verifies a large target with no partial left behind', async () => {
    const outcome = await download();
    expect(outcome).toEqual({ fetchedBytes: SIZE, resumedFromBytes: 0, restarts: 0 });
    expect(await readFile(dest)).toEqual(expected);
    expect(await readdir(partialDir)).toEqual([]);
  });

  it('resumes a cut connection with a Range request and fetches only the rest', async () => {
    t.faults.add(servedPath, { kind: 'cut', afterBytes: SIZE / 2 }, 1);
    const outcome = await download();
    expect(await readFile(dest)).toEqual(expected);
    expect(rangeRequests()).toEqual([expect.stringMatching(/^bytes=\d+-$/)]);
    expect(outcome.resumedFromBytes).toBeGreaterThan(0);
    expect(outcome.resumedFromBytes + outcome.fetchedBytes).toBeLessThanOrEqual(SIZE * 1.05 + SIZE / 2);
    expect(
      t.faults.requests.filter((r) => r.path === servedPath).reduce((n, r) => n + r.bytes, 0),
    ).toBeLessThanOrEqual(SIZE * 1.05);
  });

  it('starts over when the server ignores Range, and still verifies', async () => {
    t.faults.add(servedPath, { kind: 'cut', afterBytes: SIZE / 2 }, 1);
    t.faults.add(servedPath, { kind: 'ignore-range' }, 1);
    const outcome = await download();
    expect(await readFile(dest)).toEqual(expected);
    expect(rangeRequests()).toHaveLength(1);
    expect(outcome.resumedFromBytes).toBe(0);
  });

  it('rejects one corrupted byte as an attack, keeping neither the file nor a partial', async () => {
    t.faults.add(servedPath, { kind: 'corrupt', offset: 12345 }, 1);
    const error = await rejection(download());
    expect(error).toMatchObject({ kind: 'attack', code: 'TUF_HASH_MISMATCH' });
    await expect(readFile(dest)).rejects.toThrow(/ENOENT/);
    expect(await readdir(partialDir)).toEqual([]);
    expect(c.fetcher.stats.verificationFailures).toBe(1);
    expect((await download()).fetchedBytes).toBe(SIZE);
  });

  it('discards a resumed partial that fails verification and fetches the target again from zero', async () => {
    await mkdir(partialDir, { recursive: true });
    const sha256 = (await t.repo.readTargets()).targets[TARGET]?.hashes.sha256;
    await writeFile(join(partialDir, `${sha256}.part`), Buffer.alloc(SIZE / 2, 'x'));
    const outcome = await download();
    expect(outcome.restarts).toBe(1);
    expect(await readFile(dest)).toEqual(expected);
  });

  it('keeps the partial of a stalled transfer and resumes it once the server answers again', async () => {
    t.faults.add(servedPath, { kind: 'stall', afterBytes: SIZE / 4 }, 2);
    const error = await rejection(download());
    expect(error).toMatchObject({ code: 'TUF_SLOW_RETRIEVAL' });
    expect((await readdir(partialDir)).length).toBe(1);
    t.faults.clear();
    const outcome = await download();
    expect(outcome.resumedFromBytes).toBeGreaterThan(0);
    expect(await readFile(dest)).toEqual(expected);
  });

  it('cuts off a body longer than the signed length (endless data) and deletes the partial', async () => {
    t.faults.add(servedPath, { kind: 'append', extraBytes: 10 });
    await expect(rejection(download())).resolves.toMatchObject({ kind: 'attack', code: 'TUF_ENDLESS_DATA' });
    expect(await readdir(partialDir)).toEqual([]);
  });

  it('a disk that fills during the transfer: a clear local error, the partial kept for later, nothing in place', async () => {
    const unmount = await mountSmallDisk(partialDir, '1m');
    try {
      const error = await rejection(download());
      expect(error).toMatchObject({ kind: 'local', code: 'DISK_FULL' });
      expect(error.message).toMatch(/no space left .* writing .*\.part.*free disk space/i);
      await expect(stat(dest)).rejects.toThrow(/ENOENT/);
      const [part] = await readdir(partialDir);
      expect((await stat(join(partialDir, part as string))).size).toBeLessThan(SIZE);
    } finally {
      await unmount();
    }
    // Space again: the same download completes and verifies.
    expect((await download()).fetchedBytes).toBe(SIZE);
    expect(await readFile(dest)).toEqual(expected);
  });

  it('a full disk under a small file (metadata, a manifest) is a local error, not an attack', async () => {
    const tmpDir = join(t.workDir, 'tiny-tmp');
    const unmount = await mountSmallDisk(tmpDir, '4k');
    try {
      await c.fetcher.close();
      c = clientFor(t, 'tiny', { tmpDir });
      await t.publish({ component: 'frontend', version: '1.0.0', channel: 'stable', size: 64 * 1024 });
      const error = await rejection(
        c.client.session(async (s) => {
          const info = await s.targetInfo(artifactTargetPath('frontend', '1.0.0', 'frontend-1.0.0.bin'));
          await s.fetchTarget(info!);
        }),
      );
      expect(error).toMatchObject({ kind: 'local', code: 'DISK_FULL' });
      expect(error.message).toMatch(/no space left on the device while writing .*tiny-tmp/);
    } finally {
      await unmount();
    }
  });

  it('an abort ends a stalled transfer at once, keeping the partial', async () => {
    t.faults.add(servedPath, { kind: 'stall', afterBytes: SIZE / 4 });
    await c.fetcher.close();
    c = clientFor(t, 'patient', { idleTimeoutMs: 20_000 });
    const controller = new AbortController();
    const started = performance.now();
    const download = c.client.session(async (s) => {
      const info = await s.targetInfo(TARGET);
      return s.downloadTarget(info!, dest, {
        partialDir,
        signal: controller.signal,
        onBytes: () => setTimeout(() => controller.abort(), 200),
      });
    });
    await expect(download).rejects.toMatchObject({ name: 'AbortError' });
    expect(performance.now() - started).toBeLessThan(5_000);
    const [part] = await readdir(partialDir);
    expect((await stat(join(partialDir, part as string))).size).toBeGreaterThan(0);
    await expect(stat(dest)).rejects.toThrow(/ENOENT/);
  });

  it('holds a bandwidth cap', async () => {
    await c.fetcher.close();
    c = clientFor(t, 'capped', { rateLimiter: new RateLimiter(2 * 1024 * 1024) });
    const started = performance.now();
    await download();
    // 3 MiB at 2 MiB/s, from an empty bucket holding at most 0.5 MiB, takes at least 1.25 s.
    expect(performance.now() - started).toBeGreaterThanOrEqual(1200);
  });
});

describe('openTargetRange', () => {
  const read = (start: number, end: number) =>
    c.client.session(async (s) => {
      const info = await s.targetInfo(TARGET);
      const pieces: Buffer[] = [];
      for await (const piece of s.openTargetRange(info!, start, end)) pieces.push(piece);
      return Buffer.concat(pieces);
    });

  it('streams exactly the bytes asked for, in one range request, resuming the rest after a cut', async () => {
    expect(await read(1000, 200_000)).toEqual(expected.subarray(1000, 200_000));
    expect(rangeRequests()).toEqual(['bytes=1000-199999']);
    t.faults.resetRequests();
    t.faults.add(servedPath, { kind: 'cut', afterBytes: 50_000 }, 1);
    expect(await read(0, SIZE)).toEqual(expected);
    expect(rangeRequests()).toEqual([`bytes=0-${SIZE - 1}`, expect.stringMatching(/^bytes=[1-9]\d+-\d+$/)]);
  });

  it('refuses a range outside the signed target before asking, and a server that ignores ranges', async () => {
    expect(await rejection(read(0, SIZE + 1))).toMatchObject({ kind: 'attack', code: 'TUF_INVALID_RANGE' });
    expect(rangeRequests()).toEqual([]);
    t.faults.add(servedPath, { kind: 'ignore-range' }, 1);
    expect((await rejection(read(10, 20))).message).toMatch(/range request/);
  });
});
