import { readFile } from 'node:fs/promises';
import { type Logger, type ReleaseManifest, releaseManifestSchema } from '@aico-update/shared';
import { releaseOfTarget, type TufClient, TufError } from '@aico-update/tuf-client';
import type { ReleaseSource } from '../domain/ports.ts';
import type { ReleaseCandidate } from '../domain/select-release.ts';

/** Releases are the targets whose signed `custom.aico` parses; their manifests are verified targets. */
export class TufReleaseSource implements ReleaseSource {
  readonly #client: TufClient;
  readonly #logger: Logger;

  constructor(client: TufClient, logger: Logger) {
    this.#client = client;
    this.#logger = logger;
  }

  withReleases<T>(
    use: (
      releases: ReleaseCandidate[],
      verifyManifest: (release: ReleaseCandidate) => Promise<ReleaseManifest>,
    ) => Promise<T>,
  ): Promise<T> {
    return this.#client.session(async (session) => {
      const releases: ReleaseCandidate[] = [];
      for (const [path, info] of session.targets) {
        if (info.custom?.aico === undefined) continue;
        const release = releaseOfTarget(path, info);
        if (!release) {
          this.#logger.warn({ target: path }, 'ignoring a signed target whose release metadata is not valid');
          continue;
        }
        releases.push(release);
      }
      const verifyManifest = async (release: ReleaseCandidate): Promise<ReleaseManifest> => {
        const info = session.targets.get(release.target.path);
        if (!info) throw new Error(`target ${release.target.path} vanished from the trusted metadata`);
        const file = await session.fetchTarget(info);
        const parsed = releaseManifestSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
        if (!parsed.success) {
          throw new TufError(
            'internal',
            'RELEASE_MANIFEST_INVALID',
            `the signed manifest ${release.target.path} is not a valid release manifest (${parsed.error.issues[0]?.message}); tell the publisher`,
          );
        }
        return parsed.data;
      };
      return use(releases, verifyManifest);
    });
  }

  async trustedExpiries(): Promise<Record<string, Date> | undefined> {
    return (await this.#client.trusted())?.expiries;
  }
}
