import { join } from 'node:path';
import { BlobVerificationError, verifiedImageArchive } from '@aico-update/image-archive';
import type { ReleaseImage } from '@aico-update/shared';
import { InstallFailed } from '../domain/install-failed.ts';
import type { InstallDeps } from './install-release.ts';

/**
 * Loads an image from its verified blobs: streamed to the engine and hashed on the way (see
 * verifiedImageArchive), with no tags, then checked to be there under its signed id. Nothing is stopped
 * yet; a blob that does not match its signed digest means the engine loaded nothing.
 */
export async function loadImage(deps: InstallDeps, image: ReleaseImage): Promise<void> {
  if (await deps.runtime.imageExists(image.image_id)) return;
  const blob = (b: { digest: string; length: number }) => ({
    ...b,
    file: join(deps.cacheDir, 'blobs', b.digest.slice('sha256:'.length)),
  });
  const archive = verifiedImageArchive({
    imageId: image.image_id,
    repoTags: [],
    config: blob(image.config),
    layers: image.layers.map(blob),
  });
  let refused: BlobVerificationError | undefined;
  archive.on('error', (error) => {
    if (error instanceof BlobVerificationError) refused = error;
  });
  try {
    await deps.runtime.loadImage(archive);
  } catch (error) {
    if (refused) {
      throw new InstallFailed(
        refused.digest === image.config.digest && image.image_id !== image.config.digest
          ? 'IMAGE_ID_MISMATCH'
          : 'BLOB_NOT_VERIFIED',
        `the ${image.service} image was not loaded: ${refused.message}. The cache holds a file that is not what was signed (download it again); nothing was loaded or stopped`,
        false,
        { cause: refused },
      );
    }
    throw new InstallFailed(
      'IMAGE_LOAD_FAILED',
      `loading the ${image.service} image failed: ${(error as Error).message}; nothing was stopped`,
      false,
      { cause: error },
    );
  }
  if (refused) {
    throw new InstallFailed(
      'BLOB_NOT_VERIFIED',
      `the ${image.service} image was not loaded: ${refused.message}`,
      false,
    );
  }
  if (!(await deps.runtime.imageExists(image.image_id))) {
    throw new InstallFailed(
      'IMAGE_ID_MISMATCH',
      `the loaded ${image.service} image does not have the signed id ${image.image_id}; nothing was stopped`,
      false,
    );
  }
}
