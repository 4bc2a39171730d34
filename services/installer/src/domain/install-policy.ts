import {
  type Channel,
  channelIncludes,
  type InstallReason,
  type PausedComponent,
  type ReleaseHold,
  type ReleaseRef,
  type UpdatePolicy,
} from '@aico-update/shared';
import semver from 'semver';

/*
 * Whether a release may be installed, decided from what is trusted only: the release as the installer's
 * own verified TUF metadata signs it, the installed version the installer recorded, its own policy, and
 * whether an operator asked (a job the installer sealed itself). What a job claims about itself (reason,
 * critical, channel) plays no part.
 */

/** An install the installer has authorized: the signed release, and why it runs. */
export interface InstallOrder {
  v: 1;
  release: ReleaseRef;
  reason: InstallReason;
  /** false: stage only (load and verify; nothing stops). */
  auto_restart?: boolean | undefined;
}

export type InstallDecision =
  | { allowed: true; reason: InstallReason }
  | { allowed: false; code: string; message: string };

export interface DecisionInput {
  release: ReleaseRef;
  /** The installed version, when one is known. */
  installed: string | undefined;
  /** The job was sealed by this installer's command handler: an operator's request. */
  operator: boolean;
  /** The operator asked explicitly for a release older than (or not reachable from) the installed one. */
  allowDowngrade: boolean;
  policy: Pick<UpdatePolicy, 'auto_install' | 'critical_install'> & { channel: Channel };
  /** The release is quarantined or skipped (only an operator's request installs it). */
  hold?: ReleaseHold | undefined;
  /** The circuit breaker paused automatic installs of the component. */
  paused?: PausedComponent | undefined;
}

export function decideInstall(input: DecisionInput): InstallDecision {
  const { release, installed, operator, policy } = input;
  const name = `${release.component} ${release.version}`;
  let reason: InstallReason;
  if (operator) {
    reason = 'request';
  } else if (release.critical && policy.critical_install) {
    reason = 'critical';
  } else if (!release.critical && policy.auto_install) {
    reason = 'auto_install';
  } else {
    return {
      allowed: false,
      code: 'NOT_AUTHORIZED',
      message: `an install of ${name} that no operator asked for, and the policy does not install it by itself (${release.critical ? 'update.critical_install' : 'update.auto_install'} is false; the signed release is ${release.critical ? '' : 'not '}critical). Ask with update.install.request. Nothing was changed`,
    };
  }
  if (!operator && input.hold) {
    const { hold } = input;
    return {
      allowed: false,
      code: hold.kind === 'quarantined' ? 'QUARANTINED' : 'SKIPPED',
      message: `${name} is ${hold.kind === 'quarantined' ? `quarantined since ${hold.at}: ${hold.reason}` : `skipped (${hold.reason})`}; it is not installed automatically. An operator's install request naming ${release.version} installs it. Nothing was changed`,
    };
  }
  if (!operator && input.paused) {
    const { paused } = input;
    return {
      allowed: false,
      code: 'CIRCUIT_OPEN',
      message: `automatic installs of ${release.component} are paused since ${paused.since} after ${paused.failures} failed automatic installs (${paused.reason}); resume them (update.install.resume) or install ${release.version} on request. Nothing was changed`,
    };
  }
  if (!operator && !channelIncludes(policy.channel, release.channel)) {
    return {
      allowed: false,
      code: 'CHANNEL_NOT_FOLLOWED',
      message: `${name} is signed for the ${release.channel} channel, which update.channel = ${policy.channel} does not follow; it is not installed automatically. Nothing was changed`,
    };
  }
  if (installed && !input.allowDowngrade) {
    if (semver.lt(release.version, installed)) {
      return {
        allowed: false,
        code: 'DOWNGRADE_REFUSED',
        message: `${name} is older than the installed ${installed}; a downgrade happens only when an operator asks for it explicitly (allow_downgrade). Nothing was changed`,
      };
    }
    if (release.min_from_version && semver.lt(installed, release.min_from_version)) {
      return {
        allowed: false,
        code: 'NOT_REACHABLE',
        message: `${name} can update only from ${release.min_from_version} or later, and ${installed} is installed: install ${release.min_from_version} first. Nothing was changed`,
      };
    }
  }
  return { allowed: true, reason };
}
