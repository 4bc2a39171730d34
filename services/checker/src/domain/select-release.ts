import {
  type Channel,
  type Component,
  type ComponentCheck,
  channelIncludes,
  type ReleaseHold,
  type ReleaseRef,
  type UpdatePolicy,
} from '@aico-update/shared';
import semver from 'semver';

/** A signed release as the checker sees it: the summary from targets metadata plus its target. */
export type ReleaseCandidate = ReleaseRef;

/**
 * For each installed component: the newest release visible on the channel that is newer than what is
 * installed, can update from it (its min_from_version allows the installed version), and is neither
 * quarantined (rolled back here) nor skipped by the user. A newer release that cannot be reached
 * directly is reported as `blocked`, held ones as `held` with their reasons, so an operator sees why
 * they are not offered. A newer good release supersedes a held one.
 */
export function selectUpdates(
  installed: Readonly<Partial<Record<Component, string>>>,
  releases: readonly ReleaseCandidate[],
  channel: Channel,
  holds: readonly ReleaseHold[] = [],
): ComponentCheck[] {
  const checks: ComponentCheck[] = [];
  for (const [component, version] of Object.entries(installed) as [Component, string][]) {
    const holdOf = (r: ReleaseCandidate) =>
      holds.find((h) => h.component === component && h.version === r.version);
    const newer = releases
      .filter((r) => r.component === component && channelIncludes(channel, r.channel))
      .filter((r) => semver.gt(r.version, version))
      .sort((a, b) => semver.rcompare(a.version, b.version));
    const open = newer.filter((r) => !holdOf(r));
    const reachable = open.find((r) => !r.min_from_version || semver.gte(version, r.min_from_version));
    const newest = open[0];
    const check: ComponentCheck = { component, installed: version };
    if (reachable) check.update = reachable;
    if (newest && newest !== reachable && newest.min_from_version) {
      check.blocked = { version: newest.version, min_from_version: newest.min_from_version };
    }
    const held = newer
      .filter((r) => !reachable || semver.gt(r.version, reachable.version))
      .flatMap((r) => holdOf(r) ?? []);
    if (held.length > 0) check.held = held;
    checks.push(check);
  }
  return checks;
}

export type DownloadReason = 'auto_download' | 'critical';

/** Whether a found release is downloaded now: the seed's auto_download, or a critical one under critical_install. */
export function downloadReason(release: ReleaseCandidate, policy: UpdatePolicy): DownloadReason | undefined {
  if (release.critical && policy.critical_install) return 'critical';
  if (policy.auto_download) return 'auto_download';
  return undefined;
}
