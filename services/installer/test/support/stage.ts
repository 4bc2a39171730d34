import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { initRepository, openRepository, type Repository } from '@aico-update/release';
import {
  type DownloadedRecord,
  type InstallJob,
  type ReleaseImage,
  type ReleaseRef,
  releaseBlobs,
  releaseTargetPath,
  StateKeys,
} from '@aico-update/shared';
import { docker, makeTempDir } from '@aico-update/shared/testing';
import type { Redis } from 'ioredis';

/*
 * Releases for the installer's tests, as they reach it in production: published into a real signed TUF
 * repository (aico-release), then put into the cache exactly as the downloader leaves it: the verified
 * metadata as a mirror (`metadata/`), the blobs by sha256, the signed manifest bytes. The installer
 * verifies all of it with its own TUF client. One publisher per cache folder.
 */

export interface StagedJob extends InstallJob {
  /** The release as the publisher signed it (what the downloader's record carries). */
  ref: ReleaseRef;
}

const publishers = new Map<string, Promise<Repository>>();

/** The signed repository that publishes the releases of this cache (made on first use). */
export function publisherFor(cacheDir: string): Promise<Repository> {
  let repo = publishers.get(cacheDir);
  if (!repo) {
    const dir = join(dirname(cacheDir), `${basename(cacheDir)}-publisher`);
    repo = openRepository(dir).catch(() => initRepository(dir));
    publishers.set(cacheDir, repo);
  }
  return repo;
}

export async function stageRelease(
  cacheDir: string,
  component: 'backend',
  version: string,
  images: { service: string; tag: string }[],
  tamper?: (image: ReleaseImage) => ReleaseImage,
  options: { critical?: boolean; channel?: 'stable' | 'beta' | 'dev'; minFromVersion?: string } = {},
): Promise<StagedJob> {
  const repo = await publisherFor(cacheDir);
  const work = await makeTempDir('stage');
  const archives: { service: string; archive: string }[] = [];
  for (const { service, tag } of images) {
    const archive = join(work, `${service}.tar`);
    await docker('save', '-o', archive, tag);
    archives.push({ service, archive });
  }
  const manifest = await repo.addRelease({
    component,
    version,
    channel: options.channel ?? 'stable',
    critical: options.critical ?? false,
    minFromVersion: options.minFromVersion,
    notes: '',
    artifacts: [],
    images: archives,
    // Chunked like every release, at a fast level: these tests are about installing, not bytes.
    zstdLevel: 3,
    force: true,
    ...(tamper ? { alterManifest: (m) => ({ ...m, images: m.images.map(tamper) }) } : {}),
  });
  await rm(work, { recursive: true, force: true });
  for (const { tag } of images) await docker('rmi', '-f', tag);
  await syncCache(repo, cacheDir);
  await mkdir(join(cacheDir, 'blobs'), { recursive: true });
  for (const blob of releaseBlobs(manifest)) {
    await copyFile(await servedTarget(repo, blob.target), join(cacheDir, 'blobs', blob.digest.slice(7)));
  }
  await mkdir(join(cacheDir, 'manifests'), { recursive: true });
  const target = releaseTargetPath(component, version);
  await copyFile(
    await servedTarget(repo, target),
    join(cacheDir, 'manifests', `${component}@${version}.json`),
  );
  const entry = (await repo.readTargets()).targets[target];
  if (!entry?.custom || !entry.hashes.sha256) throw new Error(`${target} was not published`);
  const ref = {
    ...(entry.custom.aico as Omit<ReleaseRef, 'target'>),
    target: { path: target, length: entry.length, sha256: entry.hashes.sha256 },
  };
  return { v: 1, release: { component, version }, reason: 'request', ref };
}

/** The publisher's current metadata into the cache's mirror folder, as the downloader keeps it. */
export async function syncCache(repo: Repository, cacheDir: string): Promise<void> {
  const mirror = join(cacheDir, 'metadata');
  await mkdir(mirror, { recursive: true });
  // Roots and versioned files first, the timestamp last: the order a client must never see broken.
  const names = (await readdir(repo.metadataDir)).filter(
    (n) => n.endsWith('.json') && n !== 'timestamp.json',
  );
  for (const name of names) await copyFile(join(repo.metadataDir, name), join(mirror, name));
  await copyFile(join(repo.metadataDir, 'timestamp.json'), join(mirror, 'timestamp.json'));
}

/** Where the repository keeps a target's bytes (consistent snapshots: the hash in the file name). */
async function servedTarget(repo: Repository, target: string): Promise<string> {
  const entry = (await repo.readTargets()).targets[target];
  const sha256 = entry?.hashes.sha256 ?? target.split('/').at(-1);
  const slash = target.lastIndexOf('/');
  return join(repo.targetsDir, target.slice(0, slash), `${sha256}.${target.slice(slash + 1)}`);
}

/** Records the staged release as the downloader does once every byte is verified. */
export async function markDownloaded(redis: Redis, job: StagedJob): Promise<void> {
  const record: DownloadedRecord = {
    manifest_sha256: job.ref.target.sha256,
    completed_at: new Date().toISOString(),
    release: job.ref,
  };
  await redis.hset(StateKeys.downloaded, `${job.ref.component}@${job.ref.version}`, JSON.stringify(record));
}

/** The newest install, rollback or refusal in the installer's history (other decisions are skipped). */
export async function lastOutcome(redis: Redis): Promise<Record<string, unknown>> {
  for (const raw of await redis.lrange(StateKeys.installHistory, 0, 50)) {
    const entry = JSON.parse(raw) as Record<string, unknown>;
    if (entry.outcome) return entry;
  }
  throw new Error('no install outcome in the history');
}
