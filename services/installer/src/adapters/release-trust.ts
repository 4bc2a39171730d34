import { join } from 'node:path';
import {
  cacheMirrorDir,
  hasCode,
  type Logger,
  parseJsonOrUndefined,
  type ReleaseManifest,
  type ReleasePointer,
  type ReleaseRef,
  readRegularFile,
  releaseManifestSchema,
  sha256Hex,
} from '@aico-update/shared';
import {
  DirectoryFetcher,
  mirrorUrl,
  type RefreshOutcome,
  signedRelease,
  TufClient,
  TufError,
} from '@aico-update/tuf-client';
import { InstallFailed } from '../domain/install-failed.ts';

/*
 * The installer's own trust. It keeps its own trusted TUF metadata (on its own volume, seeded from the
 * shipped root) and refreshes it from the mirror the downloader keeps in the shared cache: TUF metadata
 * verifies itself, so the mirror's writer can withhold or freeze it until it expires, never make the
 * installer trust what the publisher did not sign. The installer needs no route to the update server.
 * A release is what the installer's metadata signs now; the manifest in the cache must hash to it.
 */

export interface TrustedRelease {
  release: ReleaseRef;
  manifest: ReleaseManifest;
}

/** A manifest is small; anything larger is not one the publisher signed. */
const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

export class ReleaseTrust {
  readonly #client: TufClient;
  readonly #cacheDir: string;

  constructor(options: { cacheDir: string; stateDir: string; trustedRoot: string; logger: Logger }) {
    this.#cacheDir = options.cacheDir;
    const mirror = cacheMirrorDir(options.cacheDir);
    this.#client = new TufClient({
      metadataDir: join(options.stateDir, 'metadata'),
      workDir: options.stateDir,
      trustedRootFile: options.trustedRoot,
      metadataUrl: mirrorUrl(mirror),
      targetsUrl: mirrorUrl(join(options.cacheDir, 'no-targets')),
      targetsDir: join(options.stateDir, 'targets'),
      fetcher: new DirectoryFetcher({ root: mirror, tmpDir: join(options.stateDir, 'tmp') }),
      logger: options.logger,
    });
  }

  /**
   * The release a pointer names, as the installer's freshly verified metadata signs it, with the cached
   * manifest whose bytes hash to the signed entry. Throws InstallFailed: the TUF failure's code,
   * RELEASE_WITHDRAWN, NOT_DOWNLOADED, MANIFEST_NOT_SIGNED, RELEASE_MANIFEST_INVALID.
   */
  async verify(pointer: ReleasePointer): Promise<TrustedRelease> {
    const name = `${pointer.component} ${pointer.version}`;
    let release: ReleaseRef | undefined;
    try {
      release = await this.#client.session((session) => signedRelease(session, pointer));
    } catch (error) {
      if (!(error instanceof TufError)) throw error;
      throw new InstallFailed(
        error.code,
        `the installer could not verify the update metadata (${error.kind}): ${error.message}`,
        false,
        { cause: error },
      );
    }
    if (!release) {
      throw new InstallFailed(
        'RELEASE_WITHDRAWN',
        `${name} is not in the current signed targets: the publisher withdrew it (or never published it). It is not installed; nothing was changed`,
        false,
      );
    }
    const file = join(this.#cacheDir, 'manifests', `${pointer.component}@${pointer.version}.json`);
    let bytes: Buffer;
    try {
      bytes = await readRegularFile(file, MAX_MANIFEST_BYTES);
    } catch (error) {
      throw new InstallFailed(
        hasCode(error, 'ENOENT') ? 'NOT_DOWNLOADED' : 'MANIFEST_NOT_SIGNED',
        hasCode(error, 'ENOENT')
          ? `${name} is not downloaded (no manifest in ${this.#cacheDir}); download it first`
          : `the manifest of ${name} in the cache cannot be used (${(error as Error).message}); download it again. Nothing was changed`,
        false,
        { cause: error },
      );
    }
    if (bytes.length !== release.target.length || sha256Hex(bytes) !== release.target.sha256) {
      throw new InstallFailed(
        'MANIFEST_NOT_SIGNED',
        `the manifest of ${name} in the cache does not hash to the signed one (${release.target.sha256}): it was changed after it was verified, or is not this release's. Nothing was loaded or stopped; download it again`,
        false,
      );
    }
    const parsed = releaseManifestSchema.safeParse(parseJsonOrUndefined(bytes.toString('utf8')));
    if (
      !parsed.success ||
      parsed.data.component !== release.component ||
      parsed.data.version !== release.version
    ) {
      throw new InstallFailed(
        'RELEASE_MANIFEST_INVALID',
        `the signed manifest of ${name} is not a valid manifest of that release; tell the publisher. Nothing was changed`,
        false,
      );
    }
    return { release, manifest: parsed.data };
  }

  /** The installer's trusted metadata as it is now (status, expiry), without refreshing. */
  trusted(): Promise<RefreshOutcome | undefined> {
    return this.#client.trusted();
  }
}
