import { valid as validSemver } from 'semver';
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

export const semverString = z
  .string()
  .refine((value) => validSemver(value) === value, { message: 'expected a semver version such as 1.2.3' });

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
});
export type ReleaseCustom = z.infer<typeof releaseCustomSchema>;

export const artifactSchema = z.object({
  name: z.string().min(1),
  /** TUF target path of the artifact. */
  target: z.string().min(1),
  length: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type Artifact = z.infer<typeof artifactSchema>;

/** A content-addressed blob (image config or layer), itself a TUF target `blobs/sha256/<hex>`. */
export const blobRefSchema = z.object({
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  length: z.number().int().nonnegative(),
  target: z.string().min(1),
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
