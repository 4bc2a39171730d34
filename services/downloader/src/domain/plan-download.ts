import {
  type Artifact,
  type BlobRef,
  type ReleaseManifest,
  type ReleaseRef,
  releaseBlobs,
  type UpdatePolicy,
} from '@aico-update/shared';

/**
 * One file a release needs: a TUF target with its signed length and sha256, stored by sha256. A layer
 * published chunked also names its pack and chunk index: it is rebuilt from chunks instead.
 */
export interface NeededFile {
  target: string;
  length: number;
  sha256: string;
  chunked?: BlobRef['chunked'];
}

export interface DownloadPlan {
  missing: NeededFile[];
  missingBytes: number;
  /** Bytes the release needs that are already cached: what the delta saves. */
  reusedBytes: number;
  all: NeededFile[];
}

/**
 * Everything a release needs (artifacts and image blobs, each once), split into cached and missing. A
 * frontend's packages are needed only for `platforms` (the ones devices use, or the operator lists);
 * without the option, all of them.
 */
export function planDownload(
  manifest: ReleaseManifest,
  isCached: (sha256: string) => boolean,
  options: { platforms?: ReadonlySet<string> } = {},
): DownloadPlan {
  const bySha = new Map<string, NeededFile>();
  for (const a of manifest.artifacts as Artifact[]) {
    if (a.platform && options.platforms && !options.platforms.has(a.platform)) continue;
    bySha.set(a.sha256, { target: a.target, length: a.length, sha256: a.sha256 });
  }
  for (const b of releaseBlobs(manifest) as BlobRef[]) {
    const sha256 = b.digest.slice('sha256:'.length);
    bySha.set(sha256, {
      target: b.target,
      length: b.length,
      sha256,
      ...(b.chunked ? { chunked: b.chunked } : {}),
    });
  }
  const all = [...bySha.values()];
  const missing = all.filter((f) => !isCached(f.sha256));
  const missingBytes = missing.reduce((sum, f) => sum + f.length, 0);
  const reusedBytes = all.reduce((sum, f) => sum + f.length, 0) - missingBytes;
  return { missing, missingBytes, reusedBytes, all };
}

/** Free disk needed before the first byte: the missing bytes plus headroom, minus partials already there. */
export function diskShortfall(
  plan: DownloadPlan,
  partialBytes: number,
  freeBytes: number,
  headroomBytes: number,
): number {
  const need = Math.max(plan.missingBytes - partialBytes, 0) + headroomBytes;
  return Math.max(need - freeBytes, 0);
}

/** Whether a downloaded release is installed automatically, per the seed's policy. */
export function installReason(
  release: ReleaseRef,
  policy: UpdatePolicy,
): 'critical' | 'auto_install' | undefined {
  if (release.critical) return policy.critical_install ? 'critical' : undefined;
  return policy.auto_install ? 'auto_install' : undefined;
}

/**
 * Blobs that may be deleted: cached, and needed by no kept release (the installed version of each
 * component, so a rollback works offline, and every downloaded release not yet installed).
 */
export function garbage(cached: readonly string[], keptManifests: readonly ReleaseManifest[]): string[] {
  const kept = new Set(keptManifests.flatMap((m) => planDownload(m, () => false).all.map((f) => f.sha256)));
  return cached.filter((sha256) => !kept.has(sha256));
}
