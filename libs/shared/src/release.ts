import { satisfies, validRange, valid as validSemver } from 'semver';
import { z } from 'zod';
import { CHANNELS, type Channel } from './config.ts';

/*
 * What a release is on the wire. A release is a signed TUF target `releases/<component>/<version>.json`
 * (the manifest) whose target entry carries `custom.aico` (the summary below), so a client learns every
 * release's version, channel and criticality from the signed targets metadata alone, and fetches the
 * manifest only for the release it picks.
 */

export const COMPONENTS = ['backend', 'frontend', 'updater'] as const;
export type Component = (typeof COMPONENTS)[number];

/**
 * The update system's own services, in the order a self-update swaps them: the installer last, so that
 * the installer that started the swap watches every other service's swap and a new installer starts
 * only once the rest is in place. An updater release may carry images for these services only.
 */
export const UPDATER_SERVICES = ['checker', 'downloader', 'bus-gateway', 'installer'] as const;
export type UpdaterService = (typeof UPDATER_SERVICES)[number];

/** This source tree's version of the update system (its images say so unless AICO_UPDATE_VERSION does). */
export const UPDATE_SYSTEM_VERSION = '1.0.0';

/** The version of the update system this process runs: what an updater release stamped into its image. */
export function updateSystemVersion(env: NodeJS.ProcessEnv = process.env): string {
  const stamped = env.AICO_UPDATE_VERSION?.trim();
  return stamped && validSemver(stamped) === stamped ? stamped : UPDATE_SYSTEM_VERSION;
}

export const semverString = z
  .string()
  .refine((value) => validSemver(value) === value, { message: 'expected a semver version such as 1.2.3' });

/** Where AICO's frontends run. Android and iOS builds usually come from the app stores. */
export const PLATFORMS = ['windows', 'macos', 'linux', 'android', 'ios'] as const;
export type Platform = (typeof PLATFORMS)[number];

/** An API version a frontend speaks (e.g. "2"): a short name, compared as written. */
const apiVersion = z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.-]{0,19}$/);

export const semverRange = z
  .string()
  .max(200)
  .refine((value) => validRange(value) !== null, { message: 'expected a semver range such as >=2.0.0' });

export const releaseCustomSchema = z.object({
  component: z.enum(COMPONENTS),
  version: semverString,
  channel: z.enum(CHANNELS),
  critical: z.boolean(),
  notes: z.string(),
  min_from_version: semverString.optional(),
  released_at: z.iso.datetime(),
  /** Sum of the artifact lengths: what a download of this release moves at most. */
  size_bytes: z.number().int().nonnegative(),
  /** A backend release: the frontend API versions it serves (absent: any). */
  frontend_apis: z.array(apiVersion).max(20).optional(),
  /** A frontend release: the API version it speaks, and the backend versions it needs (a semver range). */
  frontend_api: apiVersion.optional(),
  needs_backend: semverRange.optional(),
  /** A frontend release: platforms it reaches through the app stores (no package from the home server). */
  store_platforms: z.array(z.enum(PLATFORMS)).optional(),
  /** A backend release: the update system versions it needs (a semver range); the updater goes first. */
  needs_updater: semverRange.optional(),
});
export type ReleaseCustom = z.infer<typeof releaseCustomSchema>;

export const artifactSchema = z.object({
  name: z.string().min(1),
  /** TUF target path of the artifact. */
  target: z.string().min(1),
  length: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** A frontend's package for this platform (absent: for every platform, e.g. release notes). */
  platform: z.enum(PLATFORMS).optional(),
});
export type Artifact = z.infer<typeof artifactSchema>;

const signedFileSchema = z.object({
  target: z.string().min(1),
  length: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type SignedFile = z.infer<typeof signedFileSchema>;

/**
 * A content-addressed blob (image config or layer), itself a TUF target `blobs/sha256/<hex>`. A layer
 * may also be published chunked: a pack of zstd frames and its chunk index, two more signed targets,
 * from which a client rebuilds the layer fetching only the chunks it does not hold. Clients that do not
 * know `chunked` (zod strips it) fetch the plain target, so old clients read new releases.
 */
export const blobRefSchema = z.object({
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  length: z.number().int().nonnegative(),
  target: z.string().min(1),
  chunked: z.object({ index: signedFileSchema, pack: signedFileSchema }).optional(),
});
export type BlobRef = z.infer<typeof blobRefSchema>;

/** A service's container image, pinned by id (the config digest), as its blobs. */
export const imageSchema = z.object({
  service: z.string().regex(/^[a-z0-9][a-z0-9_.-]*$/),
  image_id: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  repo_tags: z.array(z.string()),
  config: blobRefSchema,
  layers: z.array(blobRefSchema),
});
export type ReleaseImage = z.infer<typeof imageSchema>;

export const releaseManifestSchema = releaseCustomSchema.extend({
  schema: z.literal(1),
  artifacts: z.array(artifactSchema),
  images: z.array(imageSchema).default([]),
});
export type ReleaseManifest = z.infer<typeof releaseManifestSchema>;

export function releaseTargetPath(component: string, version: string): string {
  return `releases/${component}/${version}.json`;
}

export function blobTargetPath(digest: string): string {
  return `blobs/sha256/${digest.replace(/^sha256:/, '')}`;
}

/** A chunked layer's pack and index targets, content-addressed like blobs. */
export function chunkedTargetPaths(pack: string, index: string): { pack: string; index: string } {
  return { pack: `packs/sha256/${pack}`, index: `chunk-indexes/sha256/${index}` };
}

/** Every blob target a release needs, each once (layers shared between services count once). */
export function releaseBlobs(manifest: Pick<ReleaseManifest, 'images'>): BlobRef[] {
  const byTarget = new Map<string, BlobRef>();
  for (const image of manifest.images) {
    for (const blob of [image.config, ...image.layers]) byTarget.set(blob.target, blob);
  }
  return [...byTarget.values()];
}

/**
 * The folder in the shared cache where the downloader keeps a mirror of the TUF metadata it verified,
 * for the installer (which verifies it again against its own trusted state).
 */
export function cacheMirrorDir(cacheDir: string): string {
  return `${cacheDir.replace(/\/+$/, '')}/metadata`;
}

export function artifactTargetPath(component: string, version: string, name: string): string {
  return `artifacts/${component}/${version}/${name}`;
}

/** Channels are nested: stable sees stable; beta sees beta and stable; dev sees everything. */
export function channelIncludes(subscribed: Channel, releaseChannel: Channel): boolean {
  return CHANNELS.indexOf(releaseChannel) <= CHANNELS.indexOf(subscribed);
}

/**
 * Can a frontend release run against a backend release? Its `needs_backend` range must hold the
 * backend's version, and the backend must serve its `frontend_api` (a backend that lists none serves
 * any, a frontend that names none fits any). Both come from signed metadata only.
 */
export function frontendFits(
  frontend: Pick<ReleaseCustom, 'needs_backend' | 'frontend_api'>,
  backend: Pick<ReleaseCustom, 'version' | 'frontend_apis'>,
): boolean {
  if (
    frontend.needs_backend &&
    !satisfies(backend.version, frontend.needs_backend, { includePrerelease: true })
  )
    return false;
  if (
    frontend.frontend_api &&
    backend.frontend_apis &&
    !backend.frontend_apis.includes(frontend.frontend_api)
  )
    return false;
  return true;
}
