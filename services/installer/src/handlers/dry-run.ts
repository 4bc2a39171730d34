import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type InstallPlanRequest, installJobId, replies } from '@aico-update/shared';
import { InstallFailed } from '../domain/install-failed.ts';
import { planInstall } from '../domain/install-plan.ts';
import { decideInstall } from '../domain/install-policy.ts';
import { installWindow } from '../domain/install-window.ts';
import { chooseVersion } from './candidates.ts';
import { type InstallDeps, installedVersion, runningServices } from './install-release.ts';
import { DISK_HEADROOM_BYTES } from './plan-executor.ts';
import { updaterServices } from './self-update.ts';

/*
 * The dry run: the plan an install of a downloaded release would follow, from the same verification,
 * the same policy and the same planner the install uses, with what it would cost (data to back up, disk,
 * downtime measured on earlier swaps) and when it would run. It changes nothing: no image is loaded, no
 * container touched, no job queued.
 */

export interface PlanPreview {
  component: string;
  version: string;
  installed: string | null;
  critical: boolean;
  channel: string;
  /** May an operator install it now; would it install by itself (and when). */
  operator: { allowed: boolean; code?: string; message?: string };
  automatic: { allowed: boolean; code?: string; message?: string; at?: string };
  /** When an install would run: its schedule if one waits, the time asked about, else now. */
  runs_at: string;
  services: {
    service: string;
    container: string;
    from_image: string;
    to_image: string;
    strategy: string;
    why: string;
  }[];
  unchanged: string[];
  backup: {
    services: { service: string; container: string; paths: string[]; estimated_bytes: number }[];
    hooks: { container: string; file: string }[];
    estimated_bytes: number;
    dir: string;
  } | null;
  disk: { dir: string; free_bytes: number; needed_bytes: number; enough: boolean } | null;
  prepare: { services: string[]; timeout_seconds: number; max_delay_seconds: number } | null;
  expected_downtime_seconds: number;
  /** measured: the median of earlier swaps of the slowest service; otherwise the health timeout bounds it. */
  downtime_basis: 'measured' | 'health_timeout' | 'none';
  steps: string[];
}

export type PlanReply =
  | { v: 1; request_id?: string; accepted: true; message: string; plan: PlanPreview }
  | { v: 1; request_id?: string; accepted: false; code: string; message: string };

export async function previewInstall(deps: InstallDeps, request: InstallPlanRequest): Promise<PlanReply> {
  const { ids, refuse } = replies(request);
  const { component } = request;
  const installed = await installedVersion(deps, component);
  const chosen = await chooseVersion(deps, component, installed, request.version);
  if (!chosen.ok) return refuse(chosen.code, chosen.message);
  let verified: Awaited<ReturnType<InstallDeps['trust']['verify']>>;
  try {
    verified = await deps.trust.verify({ component, version: chosen.version });
  } catch (error) {
    if (error instanceof InstallFailed) return refuse(error.code, error.message);
    throw error;
  }
  const { release, manifest } = verified;
  const operator = decideInstall({
    release,
    installed,
    operator: true,
    allowDowngrade: false,
    policy: deps.policy,
  });
  const hold = await deps.holds.holdOf(release);
  const paused = await deps.holds.pausedOf(component);
  const automaticDecision = decideInstall({
    release,
    installed,
    operator: false,
    allowDowngrade: false,
    policy: deps.policy,
    hold,
    paused,
  });
  const now = new Date();
  const window = installWindow(now, deps.policy.preferred_time, deps.window.timezone, deps.window.minutes);
  const automatic = automaticDecision.allowed
    ? {
        allowed: true,
        at: (automaticDecision.reason === 'auto_install' ? window.nextStart : now).toISOString(),
        message:
          automaticDecision.reason === 'auto_install'
            ? 'in the update.preferred_time window'
            : 'as soon as it is downloaded (critical)',
      }
    : { allowed: false, code: automaticDecision.code, message: automaticDecision.message };
  const scheduled = await deps.queue.getJob(installJobId(release));
  const scheduledAt =
    scheduled && (await scheduled.getState()) === 'delayed'
      ? ((scheduled.data?.scheduled_for as string | undefined) ??
        new Date(scheduled.timestamp + (scheduled.opts.delay ?? 0)).toISOString())
      : undefined;
  const runsAt = scheduledAt ?? (request.at ? new Date(request.at).toISOString() : now.toISOString());

  let running: Awaited<ReturnType<typeof runningServices>>;
  try {
    running =
      component === 'updater'
        ? await updaterServices(deps, manifest)
        : manifest.images.length > 0
          ? await runningServices(deps, manifest, release)
          : [];
  } catch (error) {
    if (error instanceof InstallFailed) return refuse(error.code, error.message);
    throw error;
  }
  const selfUpdate = component === 'updater';
  const planned = planInstall(manifest.images, running, {
    strategy: selfUpdate ? {} : deps.strategy,
    backupServices: selfUpdate ? [] : Object.keys(deps.data.paths),
    backupHooks: !selfUpdate && deps.data.hooks.length > 0,
  });
  // The update system's own services: the installer loads the images, a helper swaps them in order.
  const steps: { kind: string; service: string }[] = selfUpdate
    ? [
        ...planned.filter((s) => s.kind === 'load-image' || s.kind === 'check-healthy'),
        { kind: 'helper', service: 'installer' },
        ...planned
          .filter((s) => s.kind === 'swap')
          .flatMap((s) => [s, { kind: 'health-gate', service: s.service }]),
        ...(planned.some((s) => s.kind === 'swap') ? [{ kind: 'commit', service: '*' }] : []),
      ]
    : planned;
  const swaps = planned.flatMap((s) => (s.kind === 'swap' ? [s] : []));
  const backupStep = planned.find((s) => s.kind === 'backup');
  const backup =
    backupStep?.kind === 'backup' ? await backupEstimate(deps, backupStep.services, component) : null;
  const disk = backup ? await diskFor(deps, backup.estimated_bytes) : null;
  const prepareStep = selfUpdate ? undefined : planned.find((s) => s.kind === 'prepare');
  const downtime = await expectedDowntime(
    deps,
    swaps.map((s) => s.service),
    Object.fromEntries(swaps.map((s) => [s.service, s.strategy])),
  );
  const plan: PlanPreview = {
    component,
    version: release.version,
    installed: installed ?? null,
    critical: release.critical,
    channel: release.channel,
    operator: operator.allowed
      ? { allowed: true }
      : { allowed: false, code: operator.code, message: operator.message },
    automatic,
    runs_at: runsAt,
    services: swaps.map((s) => ({
      service: s.service,
      container: s.container,
      from_image: s.fromImageId,
      to_image: s.imageId,
      strategy: s.strategy,
      why: selfUpdate
        ? 'the update system’s own service: the self-update helper swaps it, stop-first, one at a time, the installer last'
        : (s.note ??
          (s.strategy === 'start-first'
            ? `installer.strategy.${s.service} = start-first: the new container starts before the old one stops (no downtime)`
            : deps.strategy[s.service] === 'stop-first'
              ? `installer.strategy.${s.service} = stop-first`
              : 'stop-first, the default (installer.strategy names none for it): the old container stops before the new one starts')),
    })),
    unchanged: running.filter((r) => !swaps.some((s) => s.service === r.service)).map((r) => r.service),
    backup,
    disk,
    prepare:
      prepareStep?.kind === 'prepare'
        ? {
            services: prepareStep.services,
            timeout_seconds: deps.prepareTimeoutMs / 1000,
            max_delay_seconds: deps.prepareMaxDelayMs / 1000,
          }
        : null,
    expected_downtime_seconds: downtime.seconds,
    downtime_basis: downtime.basis,
    steps: steps.map((s) => `${s.kind}:${s.service}`),
  };
  const summary =
    swaps.length === 0
      ? `${component} ${release.version}: nothing to swap${manifest.images.length === 0 ? ' (a release without images: frontends apply it)' : ' (every service runs it already)'}`
      : `${component} ${installed ?? '?'} → ${release.version} at ${runsAt}: swaps ${swaps.map((s) => `${s.service} (${s.strategy})`).join(', ')}${backup ? `, backs up ${backup.services.map((b) => b.paths.join(':')).join(', ') || 'the hooks'} (~${mib(backup.estimated_bytes)} MiB)` : ', no data backup'}, ~${downtime.seconds.toFixed(1)} s downtime (${downtime.basis}). Nothing was changed`;
  return { v: 1, ...ids, accepted: true, message: summary, plan };
}

/** Downtime to expect: the slowest service's median measured swap; the health timeout bounds an unmeasured one. */
export async function expectedDowntime(
  deps: InstallDeps,
  services: readonly string[],
  strategies: Readonly<Record<string, string>> = {},
): Promise<{ seconds: number; basis: PlanPreview['downtime_basis'] }> {
  const measured = await deps.state.downtimes();
  let seconds = 0;
  let basis: PlanPreview['downtime_basis'] = 'none';
  for (const service of services) {
    if ((strategies[service] ?? deps.strategy[service]) === 'start-first') continue;
    const history = [...(measured[service] ?? [])].sort((a, b) => a - b);
    if (history.length > 0) {
      seconds = Math.max(seconds, history[Math.floor(history.length / 2)] as number);
      if (basis === 'none') basis = 'measured';
    } else {
      seconds = Math.max(seconds, deps.healthTimeoutMs / 1000);
      basis = 'health_timeout';
    }
  }
  return { seconds, basis };
}

/** The data a backup would take now: `du` in each container, else the last backup's size. */
async function backupEstimate(deps: InstallDeps, services: string[], component: string) {
  const entries = [];
  let total = 0;
  for (const service of services) {
    const container = deps.services[service] as string;
    const paths = deps.data.paths[service] ?? [];
    let bytes = 0;
    for (const path of paths) {
      const result = await deps.runtime.exec(container, ['du', '-sk', path]).catch(() => undefined);
      const kib =
        result?.exitCode === 0 ? Number.parseInt(result.output.trim().split(/\s+/)[0] ?? '', 10) : Number.NaN;
      bytes += Number.isFinite(kib) ? kib * 1024 : 0;
    }
    entries.push({ service, container, paths, estimated_bytes: bytes });
    total += bytes;
  }
  if (total === 0) total = await deps.backups.lastSize(component);
  return {
    services: entries,
    hooks: deps.data.hooks.map((h) => ({ container: h.container, file: h.file })),
    estimated_bytes: total,
    dir: deps.backups.dir,
  };
}

async function diskFor(deps: InstallDeps, bytes: number) {
  const fs = await statfs(deps.backups.dir).catch(() =>
    statfs(dirname(deps.backups.dir)).catch(() => undefined),
  );
  const free = fs ? fs.bavail * fs.bsize : 0;
  const needed = bytes + DISK_HEADROOM_BYTES;
  return { dir: deps.backups.dir, free_bytes: free, needed_bytes: needed, enough: free >= needed };
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}
