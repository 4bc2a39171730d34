import {
  type Artifact,
  type Channel,
  channelIncludes,
  type Device,
  type DeviceAnswer,
  type DeviceReport,
  frontendFits,
  type ReleaseHold,
  type ReleaseManifest,
  type ReleaseRef,
} from '@aico-update/shared';
import semver from 'semver';

/*
 * Frontends, per device, from the signed metadata only: which frontend release a device should run
 * (for its platform, on the channel, newer than what it runs, and fitting the backend installed now),
 * and whether a backend release would strand registered devices (stop serving the API they speak, with
 * no frontend release for their platform that fits it). Pure: the check gathers what it needs.
 */

export interface FrontendCatalog {
  /** Every signed release (frontend and backend). */
  releases: readonly ReleaseRef[];
  /** Verified manifests of frontend releases, by version (their packages per platform). */
  manifests: ReadonlyMap<string, ReleaseManifest>;
  /** The backend installed now, as signed (or only its version, when the metadata does not list it). */
  backend: Pick<ReleaseRef, 'version' | 'frontend_apis'> | undefined;
  channel: Channel;
  holds: readonly ReleaseHold[];
}

/** How a frontend release reaches a platform: its package, or the app store; undefined: it does not. */
function delivery(
  release: ReleaseRef,
  manifest: ReleaseManifest | undefined,
  platform: Device['platform'],
): { package: Artifact } | { store: true } | undefined {
  const pkg = manifest?.artifacts.find((a) => a.platform === platform);
  if (pkg) return { package: pkg };
  if (release.store_platforms?.includes(platform)) return { store: true };
  return undefined;
}

/** Frontend releases for the platform newer than `version`, on the channel and not held, newest first. */
function candidates(catalog: FrontendCatalog, platform: Device['platform'], version: string) {
  return catalog.releases
    .filter((r) => r.component === 'frontend' && channelIncludes(catalog.channel, r.channel))
    .filter((r) => semver.gt(r.version, version))
    .filter((r) => !catalog.holds.some((h) => h.component === 'frontend' && h.version === r.version))
    .sort((a, b) => semver.rcompare(a.version, b.version))
    .flatMap((release) => {
      const how = delivery(release, catalog.manifests.get(release.version), platform);
      return how ? [{ release, ...how }] : [];
    });
}

export function answerDevice(device: DeviceReport, catalog: FrontendCatalog): DeviceAnswer {
  const base = { device_id: device.id, platform: device.platform, installed: device.version };
  const offered = candidates(catalog, device.platform, device.version);
  const backend = catalog.backend;
  const fitting = offered.find((c) => backend && frontendFits(c.release, backend));
  if (fitting) {
    const name = `frontend ${fitting.release.version}`;
    return 'store' in fitting
      ? {
          ...base,
          answer: 'store',
          release: fitting.release,
          reason: `${name} is available for ${device.platform} through the app store`,
        }
      : {
          ...base,
          answer: 'update',
          release: fitting.release,
          package: fitting.package,
          reason: `${name} for ${device.platform} is available (${fitting.package.name}, ${fitting.package.length} bytes) from the home server`,
        };
  }
  const newest = offered[0];
  if (newest) {
    const needs =
      newest.release.needs_backend ??
      (newest.release.frontend_api
        ? `a backend serving frontend API ${newest.release.frontend_api}`
        : 'another backend');
    return {
      ...base,
      answer: 'waits_for_backend',
      release: newest.release,
      needs_backend: needs,
      reason: `frontend ${newest.release.version} waits for backend ${needs}: backend ${backend?.version ?? 'unknown'} is installed; it is offered once that backend is installed and passed its health gate`,
    };
  }
  return {
    ...base,
    answer: 'up_to_date',
    reason: `frontend ${device.version} is the newest for ${device.platform}`,
  };
}

/**
 * The registered devices a backend release would strand: its frontend no longer fits it (the API it
 * speaks is not served), and no frontend release for its platform that fits it exists. A device whose
 * frontend release is not in the signed metadata is not counted (nothing is known of what it speaks).
 */
export function strandedBy(
  backend: Pick<ReleaseRef, 'version' | 'frontend_apis'>,
  devices: readonly Device[],
  catalog: FrontendCatalog,
): Device[] {
  return devices.filter((device) => {
    const runs = catalog.releases.find((r) => r.component === 'frontend' && r.version === device.version);
    if (!runs || frontendFits(runs, backend)) return false;
    return !candidates(catalog, device.platform, device.version).some((c) =>
      frontendFits(c.release, backend),
    );
  });
}

/** The hold of a backend release that would strand devices, with what it would break and how to override. */
export function strandHold(release: ReleaseRef, stranded: readonly Device[], at: Date): ReleaseHold {
  const platforms = [...new Set(stranded.map((d) => d.platform))];
  return {
    component: release.component,
    version: release.version,
    kind: 'strands_devices',
    reason: `backend ${release.version} would stop serving ${stranded.length} registered device(s) (${stranded.map((d) => `${d.id}: ${d.platform} frontend ${d.version}`).join(', ')}) and no frontend release for ${platforms.join(', ')} fits it yet; it is not offered or downloaded by itself. An operator who names it (download, install) overrides this`,
    at: at.toISOString(),
  };
}
