import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readImageArchive } from '@aico-update/image-archive';
import {
  blobTargetPath,
  type DownloadedRecord,
  hashFile,
  type InstallJob,
  type ReleaseImage,
  type ReleaseManifest,
  StateKeys,
} from '@aico-update/shared';
import { docker } from '@aico-update/shared/testing';
import type { Redis } from 'ioredis';

/**
 * Puts a release into the cache exactly as the downloader leaves it (verified blobs by sha256 and the
 * manifest), from images on the local engine, then removes the images so the installer must load them.
 */
export async function stageRelease(
  cacheDir: string,
  component: 'backend',
  version: string,
  images: { service: string; tag: string }[],
  tamper?: (image: ReleaseImage) => ReleaseImage,
): Promise<InstallJob> {
  await mkdir(join(cacheDir, 'blobs'), { recursive: true });
  await mkdir(join(cacheDir, 'manifests'), { recursive: true });
  const staged: ReleaseImage[] = [];
  for (const { service, tag } of images) {
    const work = join(cacheDir, `stage-${service}-${version}`);
    await mkdir(work, { recursive: true });
    await docker('save', '-o', join(work, 'image.tar'), tag);
    const [image] = await readImageArchive(join(work, 'image.tar'), join(work, 'x'));
    if (!image) throw new Error(`no image in ${tag}`);
    const ref = async (blob: { digest: string; length: number; file: string }) => {
      await rename(blob.file, join(cacheDir, 'blobs', blob.digest.slice(7)));
      return { digest: blob.digest, length: blob.length, target: blobTargetPath(blob.digest) };
    };
    const config = await ref(image.config);
    const layers = [];
    for (const layer of image.layers) layers.push(await ref(layer));
    const releaseImage: ReleaseImage = {
      service,
      image_id: image.imageId,
      repo_tags: image.repoTags,
      config,
      layers,
    };
    staged.push(tamper ? tamper(releaseImage) : releaseImage);
    await rm(work, { recursive: true, force: true });
    await docker('rmi', '-f', tag);
  }
  const manifest: ReleaseManifest = {
    schema: 1,
    component,
    version,
    channel: 'stable',
    critical: false,
    notes: '',
    released_at: '2026-11-27T00:00:00Z',
    size_bytes: 0,
    artifacts: [],
    images: staged,
  };
  const file = join(cacheDir, 'manifests', `${component}@${version}.json`);
  await writeFile(file, JSON.stringify(manifest));
  const { schema: _s, artifacts: _a, images: _i, ...custom } = manifest;
  return {
    v: 1,
    release: {
      ...custom,
      target: { path: `releases/${component}/${version}.json`, ...(await hashFile(file)) },
    },
    reason: 'request',
  };
}

/** Records the staged release as the downloader does once every byte is verified. */
export async function markDownloaded(redis: Redis, job: InstallJob): Promise<void> {
  const { release } = job;
  const record: DownloadedRecord = {
    manifest_sha256: release.target.sha256,
    completed_at: new Date().toISOString(),
    release,
  };
  await redis.hset(StateKeys.downloaded, `${release.component}@${release.version}`, JSON.stringify(record));
}
