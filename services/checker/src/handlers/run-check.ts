import { randomUUID } from 'node:crypto';
import {
  type CheckFailure,
  type CheckJob,
  type CheckResponse,
  type ComponentCheck,
  channelIncludes,
  type Device,
  downloadJobId,
  type Logger,
  type ReleaseHold,
  type ReleaseManifest,
  Topics,
  type UpdateAvailable,
  type UpdatePolicy,
} from '@aico-update/shared';
import { TufError } from '@aico-update/tuf-client';
import semver from 'semver';
import { answerDevice, type FrontendCatalog, strandedBy, strandHold } from '../domain/frontends.ts';
import type {
  CheckState,
  Clock,
  DownloadQueue,
  EventSink,
  InstalledVersions,
  ReleaseSource,
} from '../domain/ports.ts';
import { downloadReason, type ReleaseCandidate, selectUpdates } from '../domain/select-release.ts';
import type { CheckerMetrics } from '../metrics.ts';

export interface CheckDeps {
  policy: UpdatePolicy;
  /** The frontend devices the gateway registered (their claims: what they run, on which platform). */
  devices: () => Promise<Device[]>;
  /** The last check's verified view of frontends, for answering devices between checks. */
  catalog: { latest?: FrontendCatalog };
  source: ReleaseSource;
  installed: InstalledVersions;
  state: CheckState;
  events: EventSink;
  downloads: DownloadQueue;
  clock: Clock;
  metrics: CheckerMetrics;
  logger: Logger;
}

/**
 * One update check: refresh trusted metadata, pick the release per installed component, verify its
 * manifest, then announce and enqueue downloads per policy. A failure is classified and reported in the
 * response; it is never thrown, so one bad check does not stop the next.
 */
export async function runCheck(deps: CheckDeps, job: CheckJob): Promise<CheckResponse> {
  const { policy, logger, metrics } = deps;
  const started = deps.clock.now();
  const checkId = randomUUID();
  const log = logger.child({ check_id: checkId, reason: job.reason, forced: job.forced });
  let components: ComponentCheck[] = [];
  let error: CheckFailure | undefined;
  try {
    const installed = await deps.installed.get();
    const holds = await deps.state.holds();
    const devices = await deps.devices();
    components = await deps.source.withReleases(async (releases, verifyManifest) => {
      const checks = selectUpdates(installed, releases, policy.channel, holds);
      const catalog = await frontendCatalog(
        releases,
        installed.backend,
        policy.channel,
        holds,
        verifyManifest,
      );
      deps.catalog.latest = catalog;
      coordinateFrontends(checks, catalog, devices, started);
      for (const check of checks) {
        if (!check.update) continue;
        const manifest = await verifyManifest(check.update);
        if (manifest.component !== check.update.component || manifest.version !== check.update.version) {
          throw new TufError(
            'attack',
            'TUF_MANIFEST_MISMATCH',
            `the signed manifest of ${check.update.component} ${check.update.version} describes ${manifest.component} ${manifest.version}; the release is not offered`,
          );
        }
      }
      return checks;
    });
  } catch (failure) {
    error =
      failure instanceof TufError
        ? failure.toFailure()
        : { kind: 'internal', code: 'CHECK_INTERNAL', message: (failure as Error).message };
    log.error({ err: failure, failure: error }, `update check failed: ${error.message}`);
  }

  const finished = deps.clock.now();
  const updates = components.filter((c) => c.update);
  const response: CheckResponse = {
    v: 1,
    ...(job.request_id ? { request_id: job.request_id } : {}),
    check_id: checkId,
    reason: job.reason,
    forced: job.forced,
    channel: policy.channel,
    checked_at: finished.toISOString(),
    duration_ms: finished.getTime() - started.getTime(),
    outcome: error ? 'failed' : updates.length ? 'update_available' : 'up_to_date',
    components,
    ...(error ? { error } : {}),
    cached: false,
  };

  const expiries = (await deps.source.trustedExpiries()) ?? {};
  if (Object.keys(expiries).length > 0) {
    response.metadata_expiry = Object.fromEntries(
      Object.entries(expiries).map(([role, at]) => [role, at.toISOString()]),
    );
  }
  metrics.checks.inc({ reason: job.reason, outcome: response.outcome });
  metrics.checkDuration.observe(response.duration_ms / 1000);
  if (error) {
    metrics.checkFailures.inc({ kind: error.kind, code: error.code });
  } else {
    metrics.lastSuccess.set(finished.getTime() / 1000);
    for (const c of components) metrics.updateAvailable.set({ component: c.component }, c.update ? 1 : 0);
  }
  for (const [role, expiry] of Object.entries(expiries)) {
    metrics.metadataExpiry.set({ role }, expiry.getTime() / 1000);
  }

  await deps.state.saveLastCheck(response);
  await deps.events.publish(Topics.checkResponse, response, `check-${checkId}`);
  await deps.state.decide(
    error
      ? {
          kind: 'check_failed',
          code: error.code,
          reason: `${error.kind}: ${error.message}`,
          check_id: checkId,
        }
      : { kind: 'checked', reason: describeCheck(response), check_id: checkId, trigger: job.reason },
  );
  for (const check of updates) {
    const release = check.update!;
    const first = await deps.state.markAnnounced(release);
    if (first && policy.notify_available) {
      const forDevices = (check.devices ?? [])
        .filter((d) => d.answer === 'update' && d.release?.version === release.version)
        .map((d) => d.device_id);
      const event: UpdateAvailable = {
        v: 1,
        release,
        installed: check.installed,
        detected_at: finished.toISOString(),
        ...(forDevices.length > 0 ? { devices: forDevices } : {}),
      };
      await deps.events.publish(Topics.available, event, `available-${release.component}-${release.version}`);
    }
    const reason = downloadReason(release, policy);
    if (reason) await deps.downloads.enqueue({ v: 1, release, reason });
    else if (first) {
      await deps.state.decide({
        kind: 'waiting_for_user',
        component: release.component,
        version: release.version,
        reason: `${release.component} ${release.version} is available and update.auto_download is off: it waits until someone asks for its download (update.download.request)`,
      });
    }
    log.info(
      {
        component: release.component,
        version: release.version,
        critical: release.critical,
        download: reason ?? 'waits',
        job_id: downloadJobId(release),
      },
      `update available: ${release.component} ${check.installed} → ${release.version}`,
    );
  }
  await recordHolds(deps, components);
  if (!error && !updates.length) log.info('up to date');
  return response;
}

/** A check in one sentence, for the history: what each component has, and what is held back and why. */
export function describeCheck(response: CheckResponse): string {
  if (response.components.length === 0) return 'no installed component is known';
  return response.components
    .map((c) => {
      const parts = [
        c.update
          ? `${c.component} ${c.installed} → ${c.update.version} available`
          : `${c.component} ${c.installed} up to date`,
      ];
      if (c.blocked) parts.push(`${c.blocked.version} needs ${c.blocked.min_from_version} first`);
      for (const h of c.held ?? []) parts.push(`${h.version} ${h.kind} (${h.reason})`);
      return parts.join('; ');
    })
    .join('. ');
}

/** Frontend manifests worth knowing (the newest on the channel), the installed backend as signed. */
async function frontendCatalog(
  releases: readonly ReleaseCandidate[],
  installedBackend: string | undefined,
  channel: FrontendCatalog['channel'],
  holds: readonly ReleaseHold[],
  verifyManifest: (release: ReleaseCandidate) => Promise<ReleaseManifest>,
): Promise<FrontendCatalog> {
  // Always, not only when devices are registered: a device's first check is answered from this view.
  const manifests = new Map<string, ReleaseManifest>();
  const frontends = releases
    .filter((r) => r.component === 'frontend' && channelIncludes(channel, r.channel))
    .sort((a, b) => semver.rcompare(a.version, b.version))
    .slice(0, MANIFESTS_KEPT);
  for (const release of frontends) manifests.set(release.version, await verifyManifest(release));
  const signed = releases.find((r) => r.component === 'backend' && r.version === installedBackend);
  return {
    releases,
    manifests,
    backend: signed ?? (installedBackend ? { version: installedBackend } : undefined),
    channel,
    holds,
  };
}

/** Frontend releases whose packages a check looks at: the newest few are all a device can be offered. */
const MANIFESTS_KEPT = 10;

/**
 * Backend first, frontends after: a backend release that would strand registered devices is held; the
 * frontend entry answers each device (the newest release it can run with the backend installed now).
 */
function coordinateFrontends(
  checks: ComponentCheck[],
  catalog: FrontendCatalog,
  devices: readonly Device[],
  now: Date,
): void {
  const backend = checks.find((c) => c.component === 'backend');
  if (backend?.update && devices.length > 0) {
    const stranded = strandedBy(backend.update, devices, catalog);
    if (stranded.length > 0) {
      backend.held = [...(backend.held ?? []), strandHold(backend.update, stranded, now)];
      delete backend.update;
    }
  }
  if (devices.length === 0) return;
  const answers = devices.map((d) => answerDevice(d, catalog));
  const offered = answers
    .flatMap((a) => (a.answer === 'update' && a.release ? [a.release] : []))
    .sort((a, b) => semver.rcompare(a.version, b.version));
  const lowest = [...devices].sort((a, b) => semver.compare(a.version, b.version))[0]?.version as string;
  const existing = checks.find((c) => c.component === 'frontend');
  const entry: ComponentCheck = existing ?? { component: 'frontend', installed: lowest };
  if (offered[0]) entry.update = offered[0];
  else delete entry.update;
  entry.devices = answers;
  if (!existing) checks.push(entry);
}

/**
 * The coordination holds, once each into the history: a frontend release waiting for a newer backend,
 * and a backend release held because it would strand devices (with how many).
 */
async function recordHolds(deps: CheckDeps, components: readonly ComponentCheck[]): Promise<void> {
  const waiting = new Map<string, string>();
  for (const answer of components.flatMap((c) => c.devices ?? [])) {
    if (answer.answer === 'waits_for_backend' && answer.release)
      waiting.set(answer.release.version, answer.reason);
  }
  for (const [version, reason] of waiting) {
    if (await deps.state.markAnnounced({ component: 'frontend', version }, 'waits_for_backend')) {
      await deps.state.decide({ kind: 'waits_for_backend', component: 'frontend', version, reason });
    }
  }
  for (const hold of components.flatMap((c) => c.held ?? []).filter((h) => h.kind === 'strands_devices')) {
    if (await deps.state.markAnnounced(hold, 'strands_devices')) {
      await deps.state.decide({
        kind: 'strands_devices',
        component: hold.component,
        version: hold.version,
        reason: hold.reason,
      });
    }
  }
}
