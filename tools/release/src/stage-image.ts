import { mkdtemp, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type ArchivedImage, type ExtractedBlob, readImageArchive } from '@aico-update/image-archive';
import { type BlobRef, blobTargetPath, type ReleaseImage } from '@aico-update/shared';
import { stageChunkedLayer, type TargetEntry } from './chunked-layers.ts';
import { ReleaseToolError } from './errors.ts';

/** Writes a target's file under the served targets folder (by rename: never half there). */
export type StoreTarget = (
  target: string,
  sha256: string,
  write: (dest: string) => Promise<unknown>,
) => Promise<void>;

export interface ImageToStage {
  service: string;
  /** A `docker save` archive of exactly one image. */
  archive: string;
  /** undefined: plain layers only; else each new layer also chunked, its frames at this zstd level. */
  zstdLevel: number | undefined;
  /** Where the archive is unpacked while staging (the repository's folder: renames stay on one disk). */
  workParent: string;
}

/** Adds an image's blobs as targets (a blob already published by an earlier release is reused). */
export async function stageImage(
  targets: Record<string, TargetEntry>,
  image: ImageToStage,
  storeTarget: StoreTarget,
): Promise<ReleaseImage> {
  const { service, archive, zstdLevel } = image;
  const work = await mkdtemp(join(image.workParent, '.image-'));
  try {
    let archived: ArchivedImage[];
    try {
      archived = await readImageArchive(archive, work);
    } catch (error) {
      throw new ReleaseToolError('ARTIFACT_NOT_FOUND', `image for ${service}: ${(error as Error).message}`);
    }
    if (archived.length !== 1) {
      throw new ReleaseToolError(
        'INVALID_ARGUMENT',
        `image archive ${archive} holds ${archived.length} images; save exactly one per service (docker save IMAGE)`,
      );
    }
    const saved = archived[0] as ArchivedImage;
    const stage = async (blob: ExtractedBlob, chunked?: BlobRef['chunked']): Promise<BlobRef> => {
      const target = blobTargetPath(blob.digest);
      const sha256 = blob.digest.slice('sha256:'.length);
      if (!targets[target]) {
        await storeTarget(target, sha256, (dest) => rename(blob.file, dest));
        targets[target] = { length: blob.length, hashes: { sha256 } };
      }
      return { digest: blob.digest, length: blob.length, target, ...(chunked ? { chunked } : {}) };
    };
    const config = await stage(saved.config);
    const layers: BlobRef[] = [];
    // One after another: an image may list the same layer twice.
    for (const layer of saved.layers) {
      const chunked =
        zstdLevel === undefined
          ? undefined
          : await stageChunkedLayer(targets, layer, work, zstdLevel, storeTarget);
      layers.push(await stage(layer, chunked));
    }
    // No tags: the installer tags only what the deployment names for the service it swaps.
    return { service, image_id: saved.imageId, repo_tags: [], config, layers };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
