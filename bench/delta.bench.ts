/*
 * npm run bench:delta — compressed, chunked layers against `docker pull` in the same run:
 *   full_bytes_vs_docker_gzip   wire bytes of a first install of a ~250 MB image / the gzip layers a
 *                               registry serves `docker pull` for the same image
 *   small_change_bytes_ratio    one 1 MiB file changed in a ~200 MiB layer: bytes fetched / that
 *                               layer's compressed size (its pack)
 *   rebuild_bytes_ratio         the same files with new timestamps (a new digest): the same ratio
 *   image_ready_vs_docker_pull  first install until the image is loaded in the engine and verified,
 *                               ours / `docker pull` from Debian's docker-registry over HTTPS on loopback
 *   delta_peak_rss_mib          peak RSS of the downloader service (compiled, its compose flags) doing
 *                               the two deltas
 * The image is real: Node 24's own files as the ~190 MiB runtime layer (plus a 1 MiB data file, the
 * one that changes) and ~60 MiB of this workspace's node_modules as the app layer.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, cp, mkdir, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { releaseRef, runDownloadJob } from '@aico-update/downloader/testing';
import { verifiedImageArchive } from '@aico-update/image-archive';
import { DockerRuntime } from '@aico-update/installer';
import { startTestRepository } from '@aico-update/release/testing';
import type { ReleaseManifest } from '@aico-update/shared';
import {
  docker,
  freePort,
  importFolder,
  spawnNats,
  spawnRedis,
  waitUntil,
} from '@aico-update/shared/testing';
import { Redis } from 'ioredis';
import { compileWorkspace } from './support/compiled.ts';
import { startDownloaderService } from './support/downloader-service.ts';

const run = promisify(execFile);
const MIB = 1024 * 1024;
const ROOT = resolve(import.meta.dirname, '..');
const t = await startTestRepository();
const out = (name: string) => join(t.workDir, name);
const compiled = await compileWorkspace(out('compiled'));
const cleanups: (() => Promise<unknown>)[] = [];
const say = (line: string) => process.stderr.write(`[bench:delta] ${line}\n`);

async function du(dir: string): Promise<number> {
  const { stdout } = await run('du', ['-sb', dir]);
  return Number(stdout.split('\t')[0]);
}

// The runtime layer: Node 24's package folder and a 1 MiB data file.
const runtime = out('runtime');
await mkdir(join(runtime, 'usr/local/lib'), { recursive: true });
await mkdir(join(runtime, 'usr/share/aico'), { recursive: true });
// cp -a keeps the package's hard link (its node binary is in it twice), as an image build would.
await run('cp', ['-a', resolve(dirname(process.execPath), '..'), join(runtime, 'usr/local/lib/node')]);
await writeFile(join(runtime, 'usr/share/aico/model.bin'), randomBytes(MIB));
// The app layer: the workspace's packages, smallest names first, until ~60 MiB.
const app = out('app');
await mkdir(join(app, 'app/node_modules'), { recursive: true });
let appBytes = 0;
for (const name of (await readdir(join(ROOT, 'node_modules'))).sort()) {
  if (name.startsWith('.') || name === '@aico-update') continue;
  const size = await du(join(ROOT, 'node_modules', name));
  if (appBytes + size > 60 * MIB) continue;
  await cp(join(ROOT, 'node_modules', name), join(app, 'app/node_modules', name), {
    recursive: true,
    dereference: true,
  });
  appBytes += size;
}

/** A one-layer image of `dir`, or that layer with `app` committed on top. */
async function image(tag: string, dir: string, withApp: boolean): Promise<string> {
  await importFolder(dir, tag);
  cleanups.push(() => docker('rmi', '-f', tag));
  if (!withApp) return tag;
  const name = `aico-bench-${randomBytes(3).toString('hex')}`;
  await docker('create', '--name', name, tag, '/app');
  await docker('cp', join(app, 'app'), `${name}:/`);
  await docker('commit', name, tag);
  await docker('rm', '-f', name);
  return tag;
}

async function publish(version: string, tag: string): Promise<ReleaseManifest> {
  const archive = out(`image-${version}.tar`);
  await docker('save', '-o', archive, tag);
  const started = performance.now();
  const manifest = await t.repo.addRelease({
    component: 'backend',
    version,
    channel: 'stable',
    artifacts: [],
    images: [{ service: 'backend', archive }],
  });
  say(`published ${version} in ${((performance.now() - started) / 1000).toFixed(1)} s (zstd 19, chunked)`);
  await rm(archive);
  return manifest;
}

// --- docker pull from a registry over HTTPS on loopback --------------------------------------------
const port = await freePort();
const registryHost = `127.0.0.1:${port}`;
const certsDir = `/etc/docker/certs.d/${registryHost}`;
await mkdir(certsDir, { recursive: true });
cleanups.push(() => rm(certsDir, { recursive: true, force: true }));
await copyFile(t.caFile, join(certsDir, 'ca.crt'));
await writeFile(
  out('registry.yml'),
  [
    'version: 0.1',
    'storage:',
    `  filesystem: { rootdirectory: ${out('registry-data')} }`,
    'http:',
    `  addr: ${registryHost}`,
    `  tls: { certificate: ${join(t.workDir, 'tls/cert.pem')}, key: ${join(t.workDir, 'tls/key.pem')} }`,
    'log: { level: error }',
  ].join('\n'),
);
const registry = spawn('docker-registry', ['serve', out('registry.yml')], { stdio: 'ignore' });
cleanups.push(async () => registry.kill('SIGTERM'));
await waitUntil(
  async () =>
    (await run('curl', ['-sf', '--cacert', t.caFile, `https://${registryHost}/v2/`]).then(
      () => true,
      () => false,
    )) || undefined,
  'docker-registry to listen',
  20_000,
  100,
);

const full = await image('aico-bench/delta-full:1.0.0', runtime, true);
const pushed = `${registryHost}/aico-bench/delta-full:1.0.0`;
await docker('tag', full, pushed);
await docker('push', pushed);
const { stdout: manifestJson } = await run('curl', [
  '-sf',
  '--cacert',
  t.caFile,
  '-H',
  'Accept: application/vnd.docker.distribution.manifest.v2+json',
  `https://${registryHost}/v2/aico-bench/delta-full/manifests/1.0.0`,
]);
const gzipBytes = (JSON.parse(manifestJson) as { layers: { size: number }[] }).layers.reduce(
  (sum, l) => sum + l.size,
  0,
);
const fullManifest = await publish('1.0.0', full);
const imageId = fullManifest.images[0]?.image_id as string;
const rawLayerBytes = fullManifest.images[0]?.layers.reduce((sum, l) => sum + l.length, 0) ?? 0;

async function removeImage(): Promise<void> {
  await docker('rmi', '-f', pushed).catch(() => undefined);
  await docker('rmi', '-f', full).catch(() => undefined);
  await docker('rmi', '-f', imageId).catch(() => undefined);
}

await removeImage();
let pullStarted = performance.now();
await docker('pull', pushed);
const pullSeconds = (performance.now() - pullStarted) / 1000;
await removeImage();
// A second pull, the best of two (the registry's disk cache is warm for both ours and docker's).
pullStarted = performance.now();
await docker('pull', pushed);
const pullBest = Math.min(pullSeconds, (performance.now() - pullStarted) / 1000);
await removeImage();

// --- ours: the downloader service, then the installer's verified load ------------------------------
const [redisServer, natsServer] = await Promise.all([spawnRedis(), spawnNats()]);
cleanups.push(() => Promise.all([redisServer.stop(), natsServer.stop()]));
const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
cleanups.push(async () => redis.disconnect());
const cacheDir = out('cache');

const startService = () =>
  startDownloaderService(
    compiled,
    t,
    { redis: redisServer, nats: natsServer },
    {
      AICO_DOWNLOADER_CACHE_DIR: cacheDir,
      AICO_TUF_STATE_DIR: out('tuf-state'),
      AICO_UPDATE_SERVER_IDLE_TIMEOUT_SECONDS: '30',
    },
  );

const wireBytes = () =>
  t.faults.requests.filter((r) => r.path.startsWith('/targets/')).reduce((n, r) => n + r.bytes, 0);

async function downloadJob(version: string): Promise<void> {
  const job = await runDownloadJob(redis, redisServer.url, {
    v: 1,
    release: await releaseRef(t, 'backend', version),
    reason: 'request',
  });
  if (job.state !== 'completed') throw new Error(`the download of ${version} failed: ${job.error}`);
}

/** What the installer does: the verified blobs streamed to the engine (its DockerRuntime), the id checked. */
async function loadVerified(manifest: ReleaseManifest): Promise<void> {
  const image = manifest.images[0];
  if (!image) throw new Error('no image');
  const blob = (b: { digest: string; length: number }) => ({
    ...b,
    file: join(cacheDir, 'blobs', b.digest.slice(7)),
  });
  const runtime = new DockerRuntime();
  await runtime.loadImage(
    verifiedImageArchive({
      imageId: image.image_id,
      repoTags: [],
      config: blob(image.config),
      layers: image.layers.map(blob),
    }),
  );
  if (!(await runtime.imageExists(image.image_id)))
    throw new Error('the loaded image does not have its signed id');
}

const first = await startService();
t.faults.resetRequests();
const oursStarted = performance.now();
await downloadJob('1.0.0');
const downloadSeconds = (performance.now() - oursStarted) / 1000;
const fullWire = wireBytes();
await loadVerified(fullManifest);
const oursSeconds = (performance.now() - oursStarted) / 1000;
const fullRss = await first.memoryMiB('VmHWM');
await first.stop();
await removeImage();

// --- the deltas: one 1 MiB file changed in the runtime layer, then the same files touched -----------
const layerOnly = await image('aico-bench/delta-layer:2.0.0', runtime, false);
await publish('2.0.0', layerOnly);
await writeFile(join(runtime, 'usr/share/aico/model.bin'), randomBytes(MIB));
const changed = await publish('2.1.0', await image('aico-bench/delta-layer:2.1.0', runtime, false));
const later = new Date(Date.now() + 86_400_000);
const { stdout: files } = await run('find', [runtime]);
for (const file of files.trim().split('\n'))
  if (!(await stat(file)).isSymbolicLink()) await utimes(file, later, later);
const rebuilt = await publish('2.2.0', await image('aico-bench/delta-layer:2.2.0', runtime, false));
const packOf = (m: ReleaseManifest) => m.images[0]?.layers[0]?.chunked?.pack.length ?? Number.NaN;

const second = await startService();
await downloadJob('2.0.0');
await second.stop();
// A fresh service for the deltas: its peak is theirs, not the full download's before them.
const third = await startService();
t.faults.resetRequests();
await downloadJob('2.1.0');
const smallWire = wireBytes();
t.faults.resetRequests();
await downloadJob('2.2.0');
const rebuildWire = wireBytes();
const deltaRss = await third.memoryMiB('VmHWM');
await third.stop();

for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
await t.close();

console.log(`image_bytes=${rawLayerBytes}`);
console.log(`docker_gzip_bytes=${gzipBytes}`);
console.log(`full_wire_bytes=${fullWire}`);
console.log(`full_bytes_vs_docker_gzip=${(fullWire / gzipBytes).toFixed(3)}`);
console.log(`layer_bytes=${changed.images[0]?.layers[0]?.length}`);
console.log(`layer_pack_bytes=${packOf(changed)}`);
console.log(`small_change_wire_bytes=${smallWire}`);
console.log(`small_change_bytes_ratio=${(smallWire / packOf(changed)).toFixed(4)}`);
console.log(`rebuild_wire_bytes=${rebuildWire}`);
console.log(`rebuild_bytes_ratio=${(rebuildWire / packOf(rebuilt)).toFixed(4)}`);
console.log(`docker_pull_seconds=${pullBest.toFixed(2)}`);
console.log(`ours_image_ready_seconds=${oursSeconds.toFixed(2)}`);
console.log(`ours_download_seconds=${downloadSeconds.toFixed(2)}`);
console.log(`full_peak_rss_mib=${fullRss.toFixed(0)}`);
console.log(`image_ready_vs_docker_pull=${(oursSeconds / pullBest).toFixed(2)}`);
console.log(`delta_peak_rss_mib=${deltaRss.toFixed(0)}`);
