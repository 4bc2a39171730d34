import { basename } from 'node:path';
import {
  CHANNELS,
  type Channel,
  COMPONENTS,
  type Component,
  PLATFORMS,
  type Platform,
  type ReleaseCustom,
  releaseCustomSchema,
  UPDATER_SERVICES,
} from '@aico-update/shared';
import semver from 'semver';
import { checkZstdLevel } from './chunked-layers.ts';
import { ReleaseToolError } from './errors.ts';
import type { AddReleaseInput, PublishedRelease } from './repository.ts';

/*
 * What `aico-release` checks of a release before it stores a byte: the names it may use, a version that
 * is semver and newer than the channel's latest, the compatibility it declares, and the images an
 * updater release may carry. Every refusal names the value and what is allowed.
 */

export interface CheckedInput {
  component: Component;
  channel: Channel;
  /** The artifacts and frontend packages to publish, each file once by name. */
  files: { file: string; platform: Platform | undefined }[];
  /** undefined: layers are published plain only. */
  zstdLevel: number | undefined;
  /** The compatibility the release declares, checked (goes into the signed manifest). */
  custom: Partial<ReleaseCustom>;
}

export function checkReleaseInput(
  input: AddReleaseInput,
  published: readonly PublishedRelease[],
): CheckedInput {
  const component = parseChoice('component', input.component, COMPONENTS) as Component;
  const channel = parseChoice('channel', input.channel, CHANNELS) as Channel;
  if (semver.valid(input.version) !== input.version) {
    throw new ReleaseToolError(
      'INVALID_ARGUMENT',
      `version "${input.version}" is not semver; use MAJOR.MINOR.PATCH such as 1.2.0`,
    );
  }
  if (input.minFromVersion !== undefined && semver.valid(input.minFromVersion) !== input.minFromVersion) {
    throw new ReleaseToolError(
      'INVALID_ARGUMENT',
      `min-from "${input.minFromVersion}" is not semver; use e.g. 1.0.0`,
    );
  }
  const existing = published.filter((r) => r.component === component);
  if (existing.some((r) => r.version === input.version)) {
    throw new ReleaseToolError(
      'RELEASE_EXISTS',
      `${component} ${input.version} is already published; a published version is never replaced: publish a new version`,
    );
  }
  const latest = existing.filter((r) => r.channel === channel).at(-1);
  if (latest && semver.lte(input.version, latest.version) && !input.force) {
    throw new ReleaseToolError(
      'VERSION_NOT_NEWER',
      `${component} ${input.version} is not newer than ${latest.version}, the latest on channel ${channel}; ` +
        'publish a higher version, or pass --force to publish it anyway (clients never move to a lower version)',
    );
  }

  const files = [
    ...input.artifacts.map((file) => ({ file, platform: undefined })),
    ...(input.packages ?? []).map(({ platform, file }) => ({
      file,
      platform: parseChoice('platform', platform, PLATFORMS) as Platform,
    })),
  ];
  const names = files.map(({ file }) => basename(file));
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice !== undefined) {
    throw new ReleaseToolError(
      'INVALID_ARGUMENT',
      `two artifacts are named ${twice}; artifact names must differ`,
    );
  }

  let zstdLevel: number | undefined;
  try {
    zstdLevel = input.layers === 'plain' ? undefined : checkZstdLevel(input.zstdLevel);
  } catch (error) {
    throw new ReleaseToolError('INVALID_ARGUMENT', (error as Error).message);
  }
  const foreign = (input.images ?? []).filter(
    (i) => component === 'updater' && !(UPDATER_SERVICES as readonly string[]).includes(i.service),
  );
  if (foreign.length > 0) {
    throw new ReleaseToolError(
      'INVALID_ARGUMENT',
      `an updater release carries images of the update system's own services only (${UPDATER_SERVICES.join(', ')}), not ${foreign.map((i) => i.service).join(', ')}`,
    );
  }
  for (const { service } of input.images ?? []) {
    if (!/^[a-z0-9][a-z0-9_.-]*$/.test(service)) {
      throw new ReleaseToolError(
        'INVALID_ARGUMENT',
        `image service name "${service}" must be lower-case letters, digits, . _ -`,
      );
    }
  }
  return { component, channel, files, zstdLevel, custom: compatibility(component, input) };
}

function parseChoice(name: string, value: string, allowed: readonly string[]): string {
  if (!allowed.includes(value)) {
    throw new ReleaseToolError(
      'INVALID_ARGUMENT',
      `${name} "${value}" is not allowed; use one of ${allowed.join(', ')}`,
    );
  }
  return value;
}

/** The compatibility a release declares, checked: what a backend serves, what a frontend needs. */
function compatibility(
  component: Component,
  input: Pick<
    AddReleaseInput,
    'frontendApis' | 'frontendApi' | 'needsBackend' | 'needsUpdater' | 'storePlatforms'
  >,
): Partial<ReleaseCustom> {
  const frontendOnly = {
    frontendApi: '--frontend-api',
    needsBackend: '--needs-backend',
    storePlatforms: '--store',
  };
  for (const [key, flag] of Object.entries(frontendOnly)) {
    if (input[key as keyof typeof frontendOnly] !== undefined && component !== 'frontend') {
      throw new ReleaseToolError(
        'INVALID_ARGUMENT',
        `${flag} is for frontend releases; this is a ${component} release`,
      );
    }
  }
  for (const [key, flag] of Object.entries({
    frontendApis: '--frontend-apis',
    needsUpdater: '--needs-updater',
  })) {
    if (input[key as 'frontendApis' | 'needsUpdater'] !== undefined && component !== 'backend') {
      throw new ReleaseToolError(
        'INVALID_ARGUMENT',
        `${flag} is for backend releases; this is a ${component} release`,
      );
    }
  }
  const custom = {
    ...(input.frontendApis ? { frontend_apis: input.frontendApis } : {}),
    ...(input.frontendApi ? { frontend_api: input.frontendApi } : {}),
    ...(input.needsBackend ? { needs_backend: input.needsBackend } : {}),
    ...(input.needsUpdater ? { needs_updater: input.needsUpdater } : {}),
    ...(input.storePlatforms ? { store_platforms: input.storePlatforms } : {}),
  };
  const parsed = releaseCustomSchema
    .pick({
      frontend_apis: true,
      frontend_api: true,
      needs_backend: true,
      needs_updater: true,
      store_platforms: true,
    })
    .safeParse(custom);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ReleaseToolError(
      'INVALID_ARGUMENT',
      `${issue?.path.join('.')}: ${issue?.message} (API versions are short names such as 2; --needs-backend and --needs-updater take a semver range such as ">=2.0.0"; platforms are ${PLATFORMS.join(', ')})`,
    );
  }
  return parsed.data;
}
