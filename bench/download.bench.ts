/*
 * npm run bench:download — the downloader's building blocks against baselines in the same run:
 *   download_vs_curl       throughput of a verified 512 MiB download over HTTPS on loopback, ours / curl's
 *   download_peak_rss_mib  peak RSS of the downloader service doing that download (a BullMQ job)
 *   delta_bytes_ratio      bytes fetched for an app-layer-only image change / the whole new image
 *   resume_bytes_ratio     bytes fetched for a download cut at 50 % and resumed / the file size
 */
import { execFile } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { releaseRef, runDownloadJob } from '@aico-update/downloader/testing';
import { startTestRepository } from '@aico-update/release/testing';
import { artifactTargetPath, blobTargetPath, releaseBlobs, releaseManifestSchema } from '@aico-update/shared';
import { buildAppImage, docker, ensureBaseImage, spawnNats, spawnRedis } from '@aico-update/shared/testing';
import { Redis } from 'ioredis';
import { compileWorkspace, composeNodeFlags } from './support/compiled.ts';
import { startDownloaderService } from './support/downloader-service.ts';

const run = promisify(execFile);
const MIB = 1024 * 1024;
const SIZE = Number(process.env.BENCH_DOWNLOAD_MIB ?? 512) * MIB;
const t = await startTestRepository();
// The download runs as the downloader service does: compiled JavaScript, with the Node flags
// docker-compose.yml gives it.
const compiled = await compileWorkspace(join(t.workDir, 'compiled'));
const child = await compiled.addScript(resolve(import.meta.dirname, 'support/download-child.ts'));
const DOWNLOADER_NODE_FLAGS = await composeNodeFlags('downloader');
const out = (name: string) => join(t.workDir, name);

async function writeBigFile(path: string, bytes: number): Promise<void> {
  const stream = createWriteStream(path);
  const chunk = Buffer.alloc(MIB);
  for (let i = 0; i < bytes / MIB; i++) {
    chunk.fill(i % 251);
    if (!stream.write(chunk)) await new Promise<void>((r) => stream.once('drain', () => r()));
  }
  await new Promise<void>((r) => stream.end(() => r()));
}

async function ours(target: string, name: string) {
  const { stdout } = await run(
    process.execPath,
    [
      ...DOWNLOADER_NODE_FLAGS,
      child,
      t.metadataUrl,
      t.targetsUrl,
      t.caFile,
      t.repo.trustedRootPath,
      out(`state-${name}`),
      target,
      out(name),
    ],
    {
      maxBuffer: MIB,
    },
  );
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as {
    ms: number;
    fetchedBytes: number;
    maxRssMiB: number;
  };
}

// 1. Throughput and memory: 512 MiB, ours vs curl, best of two each.
await writeBigFile(out('big.bin'), SIZE);
await t.repo.addRelease({
  component: 'backend',
  version: '1.0.0',
  channel: 'stable',
  artifacts: [out('big.bin')],
});
await rm(out('big.bin'));
const bigTarget = artifactTargetPath('backend', '1.0.0', 'big.bin');
const sha = (await t.repo.readTargets()).targets[bigTarget]?.hashes.sha256;
const url = `${t.targetsUrl}/artifacts/backend/1.0.0/${sha}.big.bin`;
const curlSeconds: number[] = [];
const oursMs: number[] = [];
let peakRss = 0;
for (let i = 0; i < 2; i++) {
  const { stdout } = await run('curl', [
    '--silent',
    '--fail',
    '--cacert',
    t.caFile,
    '-o',
    out('curl.bin'),
    '-w',
    '%{time_total}',
    url,
  ]);
  curlSeconds.push(Number(stdout));
  await rm(out('curl.bin'));
  const result = await ours(bigTarget, `ours-${i}.bin`);
  oursMs.push(result.ms);
  peakRss = Math.max(peakRss, result.maxRssMiB);
  await rm(out(`ours-${i}.bin`));
}
const curlBest = Math.min(...curlSeconds);
const oursBest = Math.min(...oursMs) / 1000;

// 1b. The same release through the downloader service itself, as deployed (its own process, compiled,
// its compose command's Node flags): a BullMQ download job as the checker enqueues it. Its peak RSS (VmHWM) is
// the memory figure: the whole service (BullMQ, NATS, metrics, HTTP) holding a 512 MiB download.
const [redisServer, natsServer] = await Promise.all([spawnRedis(), spawnNats()]);
const service = await startDownloaderService(
  compiled,
  t,
  { redis: redisServer, nats: natsServer },
  { AICO_DOWNLOADER_CACHE_DIR: out('service-cache') },
);
const serviceIdleRss = await service.memoryMiB('VmRSS');
const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
const serviceStarted = performance.now();
const job = await runDownloadJob(redis, redisServer.url, {
  v: 1,
  release: await releaseRef(t, 'backend', '1.0.0'),
  reason: 'request',
});
const serviceSeconds = (performance.now() - serviceStarted) / 1000;
if (job.state !== 'completed') throw new Error(`the service's download failed: ${job.error}`);
const servicePeakRss = await service.memoryMiB('VmHWM');
await service.stop();
redis.disconnect();
await Promise.all([redisServer.stop(), natsServer.stop()]);

// 2. Resume: a 64 MiB file cut at 50 %.
await writeBigFile(out('resume.bin'), 64 * MIB);
await t.repo.addRelease({
  component: 'backend',
  version: '1.0.1',
  channel: 'stable',
  artifacts: [out('resume.bin')],
});
const resumeTarget = artifactTargetPath('backend', '1.0.1', 'resume.bin');
const resumeSha = (await t.repo.readTargets()).targets[resumeTarget]?.hashes.sha256;
t.faults.add(
  `/targets/artifacts/backend/1.0.1/${resumeSha}.resume.bin`,
  { kind: 'cut', afterBytes: 32 * MIB },
  1,
);
const resumed = await ours(resumeTarget, 'resumed.bin');

// 3. Delta: a realistic image (96 MiB base, 4 MiB app), then an app-only change.
await ensureBaseImage('aico-bench/base:96m', 96 * MIB);
const versions = ['2.0.0', '2.1.0'];
for (const version of versions) {
  const tag = `aico-bench/backend:${version}`;
  await buildAppImage('aico-bench/base:96m', tag, version, 4 * MIB);
  await docker('save', '-o', out(`image-${version}.tar`), tag);
  await docker('rmi', '-f', tag);
  await t.repo.addRelease({
    component: 'backend',
    version,
    channel: 'stable',
    artifacts: [],
    images: [{ service: 'backend', archive: out(`image-${version}.tar`) }],
    // Plain layers: this benchmark's keys compare verified downloads of the same bytes with curl;
    // compressed and chunked transfers are bench:delta's.
    layers: 'plain',
  });
}
const manifests = await Promise.all(
  versions.map(async (version) => {
    const entry = (await t.repo.readTargets()).targets[`releases/backend/${version}.json`];
    const file = join(t.repo.targetsDir, 'releases/backend', `${entry?.hashes.sha256}.${version}.json`);
    return releaseManifestSchema.parse(
      JSON.parse(await (await import('node:fs/promises')).readFile(file, 'utf8')),
    );
  }),
);
// Download every blob of 2.0.0, then what 2.1.0 adds, through the real client into one cache.
const cached = new Set<string>();
let deltaFetched = 0;
for (const [index, manifest] of manifests.entries()) {
  for (const blob of releaseBlobs(manifest)) {
    if (cached.has(blob.digest)) continue;
    const result = await ours(blobTargetPath(blob.digest), `blob-${blob.digest.slice(7, 19)}`);
    cached.add(blob.digest);
    if (index === 1) deltaFetched += result.fetchedBytes;
  }
}
const fullNew = releaseBlobs(manifests[1]!).reduce((sum, b) => sum + b.length, 0);
await t.close();

console.log(`download_mib=${SIZE / MIB}`);
console.log(`curl_seconds=${curlBest.toFixed(3)} curl_mib_per_s=${(SIZE / MIB / curlBest).toFixed(0)}`);
console.log(`ours_seconds=${oursBest.toFixed(3)} ours_mib_per_s=${(SIZE / MIB / oursBest).toFixed(0)}`);
console.log(`download_vs_curl=${(curlBest / oursBest).toFixed(2)}`);
console.log(
  `service_seconds=${serviceSeconds.toFixed(3)} service_idle_rss_mib=${serviceIdleRss.toFixed(0)} client_peak_rss_mib=${peakRss.toFixed(0)}`,
);
console.log(`download_peak_rss_mib=${servicePeakRss.toFixed(0)}`);
console.log(`delta_fetched_bytes=${deltaFetched} delta_full_image_bytes=${fullNew}`);
console.log(`delta_bytes_ratio=${(deltaFetched / fullNew).toFixed(4)}`);
console.log(`resume_bytes_ratio=${(resumed.fetchedBytes / (64 * MIB)).toFixed(4)}`);
