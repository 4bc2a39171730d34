import {
  type Component,
  devicesConcerned,
  type EventSink,
  type InstallJob,
  type Logger,
  type ReleaseManifest,
  type ReleaseRef,
  type RestartRequired,
  readDevices,
  readLastCheck,
  StateKeys,
  Topics,
  type UpdatePolicy,
} from '@aico-update/shared';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { BackupStore } from '../adapters/backup-store.ts';
import type { InstallerState } from '../adapters/installer-state.ts';
import type { JobSeal } from '../adapters/job-seal.ts';
import type { Journal, JournalStore } from '../adapters/journal.ts';
import type { PrepareSignal } from '../adapters/prepare-signal.ts';
import type { ReleaseHolds } from '../adapters/release-holds.ts';
import type { ReleaseTrust } from '../adapters/release-trust.ts';
import type { SettingsStore } from '../adapters/settings-store.ts';
import { InstallFailed } from '../domain/install-failed.ts';
import { planInstall, type RunningService } from '../domain/install-plan.ts';
import { decideInstall, type InstallOrder } from '../domain/install-policy.ts';
import type { ContainerRuntime, SwapStrategy } from '../domain/ports.ts';
import type { InstallerMetrics } from '../metrics.ts';
import type { OwnDeployment } from '../self-update/deployment.ts';
import type { IntentStore } from '../self-update/intent.ts';
import type { DataDeclaration } from './data-backup.ts';
import { HISTORY_KEY, record, recordRefusal } from './history.ts';
import { execute } from './plan-executor.ts';
import { startSelfUpdate } from './self-update.ts';

export { recoverInterrupted, rollbackLastInstall } from './rollback.ts';
export { HISTORY_KEY, InstallFailed };

export interface InstallDeps {
  runtime: ContainerRuntime;
  metrics: InstallerMetrics;
  redis: Redis;
  events: EventSink;
  logger: Logger;
  journal: JournalStore;
  /** The verified blob cache the downloader fills (blobs/, manifests/). */
  cacheDir: string;
  /** Service name in the release → container name on this host. */
  services: Record<string, string>;
  /** Optional HTTP health probe per service (e.g. the AICO backend's /api/v1/health). */
  probes: Record<string, string>;
  strategy: Record<string, SwapStrategy>;
  healthTimeoutMs: number;
  soakMs: number;
  /** start-first: how long the old container drains before it stops. */
  drainMs: number;
  backups: BackupStore;
  backupKeep: number;
  data: DataDeclaration;
  prepare: PrepareSignal;
  prepareTimeoutMs: number;
  prepareMaxDelayMs: number;
  /** The installer's own verification of releases (its own TUF state, the mirror in the cache). */
  trust: ReleaseTrust;
  /** Seals the jobs an operator's request queues, and tells them from anything else in the queue. */
  seal: JobSeal;
  /** What the installer installed, on its own volume. */
  state: InstallerState;
  /** The policy in force: the configuration overlaid by the user's settings (`settings.live.policy`). */
  policy: UpdatePolicy;
  settings: SettingsStore;
  /** Quarantined and skipped releases, and the circuit breaker. */
  holds: ReleaseHolds;
  /** The install queue (schedules live there). */
  queue: Queue;
  /** Where update.preferred_time is, and how long automatic installs may start after it. */
  window: { timezone: string; minutes: number };
  /** Installed versions from the configuration, for components the installer has not installed yet. */
  installedSeed: Readonly<Record<string, string>>;
  /** The update system's own containers, and the helper that swaps them (self-update). */
  deployment: OwnDeployment;
  /** The self-update intent on the installer's volume. */
  intents: IntentStore;
}

export interface InstallOutcome {
  outcome:
    | 'installed'
    | 'already_installed'
    | 'staged'
    | 'restart_required'
    | 'rolled_back'
    | 'self_update_started';
  services: string[];
  backup_id?: string;
}

/**
 * Installs one downloaded release: check disk and health, load and verify images, back up the declared
 * data, signal components, swap, health-gate, commit or roll back. Every step is journaled before and
 * after it runs (see recoverInterrupted for what a restart does).
 */
export async function installRelease(deps: InstallDeps, job: InstallJob): Promise<InstallOutcome> {
  return runInstall(deps, await authorizeInstall(deps, job));
}

/** An install the installer authorized: the release as it signs it now, its manifest, and why. */
export interface AuthorizedInstall {
  order: InstallOrder;
  manifest: ReleaseManifest;
  installed: string | undefined;
}

/**
 * Decides whether a queued job may run, from trusted facts only: the installer's own verification of
 * the release (signed now, manifest hashing to it), the installed version it recorded, its policy, and
 * its own seal on the job for an operator's request. A refusal is recorded (history, event, metric) and
 * thrown as InstallFailed with its code; nothing was touched.
 */
export async function authorizeInstall(deps: InstallDeps, job: InstallJob): Promise<AuthorizedInstall> {
  try {
    const operator = job.reason === 'request' && deps.seal.verify(job);
    const { release, manifest } = await deps.trust.verify(job.release);
    const installed = await installedVersion(deps, release.component);
    const decision = decideInstall({
      release,
      installed,
      operator,
      allowDowngrade: operator && job.allow_downgrade === true,
      policy: deps.policy,
      hold: await deps.holds.holdOf(release),
      paused: await deps.holds.pausedOf(release.component),
    });
    if (!decision.allowed) throw new InstallFailed(decision.code, decision.message, false);
    if (!operator) await refuseStranding(deps, release);
    // update.allow_restart off: what installs by itself is only staged; an operator applies it.
    const stageOnly = job.auto_restart === false || (!operator && !deps.policy.allow_restart);
    const order: InstallOrder = {
      v: 1,
      release,
      reason: decision.reason,
      ...(stageOnly ? { auto_restart: false } : {}),
    };
    return { order, manifest, installed };
  } catch (error) {
    if (error instanceof InstallFailed) {
      deps.logger.warn(
        { component: job.release.component, version: job.release.version, code: error.code },
        `install refused: ${error.message}`,
      );
      await recordRefusal(deps, job.release, error.code, error.message);
    }
    throw error;
  }
}

/**
 * An automatic install of a backend release the checker held because it would strand registered
 * frontend devices is refused with that hold's reason (an operator's request overrides it). The hold
 * comes from the checker's copy in Redis: believing it can only make the installer wait, never install.
 */
async function refuseStranding(deps: InstallDeps, release: ReleaseRef): Promise<void> {
  const check = await readLastCheck(deps.redis);
  const hold = check?.components
    .find((c) => c.component === release.component)
    ?.held?.find((h) => h.kind === 'strands_devices' && h.version === release.version);
  if (hold) {
    throw new InstallFailed(
      'STRANDS_DEVICES',
      `${hold.reason}. It is not installed by itself; nothing was changed`,
      false,
    );
  }
}

/** The installed version: the installer's own record, else the configured seed, else what Redis says. */
export async function installedVersion(deps: InstallDeps, component: Component): Promise<string | undefined> {
  return (
    (await deps.state.installed(component))?.version ??
    deps.installedSeed[component] ??
    (await deps.redis.hget(StateKeys.installed, component)) ??
    undefined
  );
}

/** Runs an authorized install: the plan, journaled, with commit or rollback. */
export async function runInstall(deps: InstallDeps, authorized: AuthorizedInstall): Promise<InstallOutcome> {
  const { order: job, manifest } = authorized;
  const { release } = job;
  const started = Date.now();
  if (release.component === 'updater') return startSelfUpdate(deps, authorized);
  if (manifest.images.length === 0) return announceArtifacts(deps, job, manifest, started);
  const running = await runningServices(deps, manifest, release);
  await refuseForeignTags(deps, manifest, release);
  const plan = planInstall(manifest.images, running, {
    strategy: deps.strategy,
    backupServices: Object.keys(deps.data.paths),
    backupHooks: deps.data.hooks.length > 0,
    stageOnly: job.auto_restart === false,
  });
  const images = Object.fromEntries(manifest.images.map((i) => [i.service, i.image_id]));
  if (plan.length === 0) {
    if (job.auto_restart !== false) {
      await deps.state.recordInstalled(release.component, {
        version: release.version,
        images,
        installed_at: new Date().toISOString(),
      });
    }
    await record(deps, job, 'already_installed', Date.now() - started);
    return { outcome: 'already_installed', services: [] };
  }
  const journal: Journal = {
    v: 1,
    kind: 'install',
    job,
    from_version: authorized.installed,
    target_version: release.version,
    images,
    started_at: new Date(started).toISOString(),
    steps: plan.map((step) => ({ ...step, status: 'pending' as const })),
    swaps: [],
  };
  await execute(deps, journal, `installing ${release.component} ${release.version}`);
  if (job.auto_restart === false) {
    await deps.journal.clear();
    await announceRestart(
      deps,
      job,
      running.map((r) => r.service),
      started,
    );
    return { outcome: 'staged', services: running.map((r) => r.service) };
  }
  return {
    outcome: 'installed',
    services: journal.swaps.map((s) => s.service),
    ...(journal.backup_id ? { backup_id: journal.backup_id } : {}),
  };
}

export async function runningServices(
  deps: InstallDeps,
  manifest: ReleaseManifest,
  release: ReleaseRef,
): Promise<RunningService[]> {
  const running: RunningService[] = [];
  for (const image of manifest.images) {
    const container = deps.services[image.service];
    if (!container) {
      throw new InstallFailed(
        'SERVICE_NOT_MANAGED',
        `the signed manifest of ${release.component} ${release.version} has an image for service "${image.service}", which installer.services does not list: a release touches only the services this installer manages. Nothing was loaded or changed`,
        false,
      );
    }
    const state = await deps.runtime.container(container);
    if (!state) {
      throw new InstallFailed(
        'SERVICE_NOT_FOUND',
        `service "${image.service}" of ${release.component} ${release.version} has no container named ${container}; nothing was changed`,
        false,
      );
    }
    running.push({
      service: image.service,
      container,
      imageId: state.imageId,
      fixedHostPort: state.fixedHostPort,
    });
  }
  return running;
}

/**
 * A release touches only what it owns: the installer never applies a manifest's tags (it tags the image
 * the swapped container's deployment names), and a manifest naming tags outside that image's
 * repository (the installer's own image, Redis, a base image) is refused before anything is loaded.
 */
async function refuseForeignTags(
  deps: InstallDeps,
  manifest: ReleaseManifest,
  release: ReleaseRef,
): Promise<void> {
  for (const image of manifest.images) {
    if (image.repo_tags.length === 0) continue;
    const ref = await deps.runtime.imageRef(deps.services[image.service] as string);
    const own = ref === undefined ? undefined : repositoryOf(ref);
    const foreign = image.repo_tags.filter((tag) => repositoryOf(tag) !== own);
    if (foreign.length > 0) {
      throw new InstallFailed(
        'RELEASE_TAGS_REFUSED',
        `the signed manifest of ${release.component} ${release.version} names ${foreign.join(', ')} for service ${image.service}, outside ${own ? `its deployment's repository ${own}` : 'the image its deployment names'}: a release may touch only the images of the services it updates. Nothing was loaded or changed`,
        false,
      );
    }
  }
}

/** The repository of an image reference, normalized as Docker does (`redis:7` → `docker.io/library/redis`). */
export function repositoryOf(reference: string): string {
  const name = reference.split('@')[0] as string;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  const repository = colon > slash ? name.slice(0, colon) : name;
  const [first, ...rest] = repository.split('/');
  if (rest.length === 0) return `docker.io/library/${repository}`;
  if (!/[.:]/.test(first as string) && first !== 'localhost') return `docker.io/${repository}`;
  return repository;
}

/**
 * A release without images (a frontend's platform packages) has nothing for the installer to swap:
 * its verified artifacts are in the cache, and the frontends apply it when they restart.
 */
async function announceArtifacts(
  deps: InstallDeps,
  job: InstallOrder,
  manifest: ReleaseManifest,
  started: number,
): Promise<InstallOutcome> {
  await announceRestart(
    deps,
    job,
    manifest.artifacts.map((a) => a.name),
    started,
    manifest.artifacts,
  );
  return { outcome: 'restart_required', services: [] };
}

async function announceRestart(
  deps: InstallDeps,
  job: InstallOrder,
  services: string[],
  started: number,
  artifacts: ReleaseManifest['artifacts'] = [],
): Promise<void> {
  const { release } = job;
  const message =
    services.length > 0 && job.auto_restart === false
      ? `${release.component} ${release.version} is loaded and verified; it is applied when ${release.component} restarts (an install request with auto_restart)`
      : `${release.component} ${release.version} is downloaded and verified; ${release.component} applies it when it restarts`;
  const forDevices = devicesConcerned(await readDevices(deps.redis), release, artifacts);
  const required: RestartRequired = {
    v: 1,
    component: release.component,
    version: release.version,
    services,
    message,
    ...(forDevices.length > 0 ? { devices: forDevices } : {}),
  };
  await deps.events.publish(
    Topics.restartRequired,
    required,
    `restart-required-${release.component}-${release.version}`,
  );
  await record(deps, job, 'restart_required', Date.now() - started, message);
}
