import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  enqueueInstall,
  type InstallJob,
  type ReleaseImage,
  type ReleaseManifest,
  Topics,
  UPDATER_SERVICES,
  type UpdaterService,
} from '@aico-update/shared';
import semver from 'semver';
import { InstallFailed } from '../domain/install-failed.ts';
import type { RunningService } from '../domain/install-plan.ts';
import { isActive, type SelfUpdateIntent, type SelfUpdateService } from '../self-update/intent.ts';
import { removePrevious } from '../self-update/swap.ts';
import { decide, record, recordRefusal, type StepTiming } from './history.ts';
import { countAutomaticFailure, publishInstallerStatus, quarantine } from './holds.ts';
import {
  type AuthorizedInstall,
  authorizeInstall,
  type InstallDeps,
  type InstallOutcome,
} from './install-release.ts';
import { loadImage } from './load-image.ts';

/*
 * The update system updates itself. The installer cannot swap its own container, so it verifies and
 * loads the new images, writes a durable intent and starts a helper container from the NEW installer
 * image (self-update/helper.ts), which swaps the services and writes the outcome. Whichever installer
 * runs afterwards (the new one after a commit, the old one after a rollback) reports it: history,
 * events, metrics, its record of the installed version; then removes the helper and the old containers,
 * and queues the backend install that waited for this updater, if one did.
 */

/** A helper that keeps dying is replaced this many times, then one from the running installer's image rolls back. */
const HELPER_STARTS_FROM_NEW_IMAGE = 2;
const MAX_HELPER_STARTS = 4;

/** Verifies and loads the release's images, writes the intent and starts the helper. */
export async function startSelfUpdate(
  deps: InstallDeps,
  authorized: AuthorizedInstall,
  nextInstall?: InstallJob,
): Promise<InstallOutcome> {
  const { order, manifest } = authorized;
  const { release } = order;
  const name = `updater ${release.version}`;
  if (manifest.images.length === 0) {
    throw new InstallFailed(
      'RELEASE_HAS_NO_IMAGES',
      `the signed manifest of ${name} carries no image; nothing to install`,
      false,
    );
  }
  const containers = await deps.deployment.containers();
  const services: SelfUpdateService[] = [];
  for (const running of await updaterServices(deps, manifest, containers)) {
    const state = await deps.runtime.container(running.container);
    if (!state?.running || state.health === 'unhealthy') {
      throw new InstallFailed(
        'PREFLIGHT_UNHEALTHY',
        `${running.container} is ${state?.running ? 'unhealthy' : 'not running'}; the update system updates itself only from a healthy state. Nothing was changed`,
        false,
      );
    }
    const image = manifest.images.find((i) => i.service === running.service) as ReleaseImage;
    if (running.imageId === image.image_id) continue;
    const ref = await deps.runtime.imageRef(running.container);
    services.push({
      service: running.service as UpdaterService,
      container: running.container,
      old_image_id: running.imageId,
      new_image_id: image.image_id,
      ...(ref ? { ref } : {}),
    });
  }
  const started = Date.now();
  for (const image of manifest.images) {
    const loadStarted = performance.now();
    await loadImage(deps, image);
    deps.metrics.phaseDuration.observe({ phase: 'load-image' }, (performance.now() - loadStarted) / 1000);
  }
  if (services.length === 0 || order.auto_restart === false) {
    // Every service runs it already, or only staging was asked for: nothing is swapped.
    const outcome = services.length === 0 ? 'already_installed' : 'staged';
    if (outcome === 'already_installed') {
      await deps.state.recordInstalled('updater', {
        version: release.version,
        images: Object.fromEntries(manifest.images.map((i) => [i.service, i.image_id])),
        installed_at: new Date().toISOString(),
      });
    }
    await record(deps, order, outcome, Date.now() - started);
    return { outcome, services: [] };
  }
  const installerImage = manifest.images.find((i) => i.service === 'installer')?.image_id;
  const intent: SelfUpdateIntent = {
    v: 1,
    id: `updater-${release.version}-${started}`.toLowerCase(),
    release,
    reason: order.reason,
    ...(authorized.installed ? { from_version: authorized.installed } : {}),
    helper: `${containers.installer}-self-update`,
    services,
    health_timeout_ms: deps.healthTimeoutMs,
    soak_ms: deps.soakMs,
    ...(nextInstall ? { next_install: nextInstall } : {}),
    started_at: new Date(started).toISOString(),
    phase: 'started',
    swapped: [],
    steps: [],
    helper_starts: 1,
  };
  await deps.intents.write(intent);
  // The helper is the new installer's code; a release that does not change the installer runs this one's.
  await deps.deployment.startHelper(intent, installerImage ?? (await deps.deployment.ownImageId()));
  const message = `the update system updates itself to ${release.version}: a helper container (${intent.helper}) swaps ${services.map((s) => s.service).join(', ')} one at a time, the installer last`;
  deps.logger.warn({ version: release.version, helper: intent.helper }, message);
  await decide(deps, 'self_update_started', release, {
    reason: message,
    services: services.map((s) => s.service),
  });
  await publishProgress(deps, intent, 'helper', 'installer', 'started');
  return { outcome: 'self_update_started', services: services.map((s) => s.service) };
}

/**
 * The update system's services an updater release changes, as they run now, in swap order. Throws
 * InstallFailed for an image of another service, or a service whose container cannot be found.
 */
export async function updaterServices(
  deps: InstallDeps,
  manifest: ReleaseManifest,
  containers?: Partial<Record<UpdaterService, string>>,
): Promise<RunningService[]> {
  const name = `updater ${manifest.version}`;
  const foreign = manifest.images.filter((i) => !(UPDATER_SERVICES as readonly string[]).includes(i.service));
  if (foreign.length > 0) {
    throw new InstallFailed(
      'SERVICE_NOT_MANAGED',
      `the signed manifest of ${name} has images for ${foreign.map((i) => i.service).join(', ')}: an updater release carries the update system's own services only (${UPDATER_SERVICES.join(', ')}). Nothing was loaded or changed`,
      false,
    );
  }
  const found = containers ?? (await deps.deployment.containers());
  const running: RunningService[] = [];
  for (const service of UPDATER_SERVICES) {
    if (!manifest.images.some((i) => i.service === service)) continue;
    const container = found[service];
    const state = container ? await deps.runtime.container(container) : undefined;
    if (!container || !state) {
      throw new InstallFailed(
        'SERVICE_NOT_FOUND',
        `the update system's ${service} has no container this installer can find (compose labels, installer.updater_containers); nothing was changed`,
        false,
      );
    }
    running.push({ service, container, imageId: state.imageId, fixedHostPort: state.fixedHostPort });
  }
  return running;
}

/**
 * A backend release that needs a newer update system than runs here: the newest downloaded, signed
 * updater release that satisfies its range installs first (through the installer's own checks, as the
 * same kind of request), and the backend install is queued once that self-update is committed.
 */
export async function installUpdaterFirst(
  deps: InstallDeps,
  backend: AuthorizedInstall,
  job: InstallJob,
  range: string,
  running: string | undefined,
): Promise<InstallOutcome> {
  const { release } = backend.order;
  const downloaded = (await readdir(join(deps.cacheDir, 'manifests')).catch(() => []))
    .map((file) => /^updater@(.+)\.json$/.exec(file)?.[1])
    .filter((v): v is string => v !== undefined && semver.valid(v) === v)
    .filter((v) => semver.satisfies(v, range, { includePrerelease: true }))
    .sort(semver.rcompare);
  const version = downloaded[0];
  if (!version) {
    const reason = `${release.component} ${release.version} needs the update system ${range}; ${running ?? 'an unknown version'} runs here and no signed updater release satisfying it is downloaded. Check for updates (the updater release is downloaded like any other) and install again. Nothing was changed`;
    await recordRefusal(deps, release, 'NEEDS_UPDATER', reason);
    throw new InstallFailed('NEEDS_UPDATER', reason, false);
  }
  const updaterJob: InstallJob = { v: 1, release: { component: 'updater', version }, reason: job.reason };
  const operator = job.reason === 'request' && deps.seal.verify(job);
  const updater = await authorizeInstall(deps, operator ? deps.seal.seal(updaterJob) : updaterJob);
  await decide(deps, 'updater_first', release, {
    reason: `${release.component} ${release.version} needs the update system ${range} (${running ?? 'unknown'} runs here): updater ${version} installs first, then ${release.component} ${release.version}`,
    plan: [`updater ${version}`, `${release.component} ${release.version}`],
  });
  return startSelfUpdate(deps, updater, job);
}

/**
 * Watches the self-update intent in every installer: publishes the helper's steps as they happen,
 * starts a helper again when one died without an outcome, and reports the outcome once there is one.
 */
export class SelfUpdateWatch {
  readonly #deps: InstallDeps;
  #published = 0;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;

  constructor(deps: InstallDeps) {
    this.#deps = deps;
  }

  /** True while a self-update is under way: no other install or rollback may run. */
  async active(): Promise<boolean> {
    return isActive(await this.#deps.intents.read());
  }

  start(intervalMs = 1000): void {
    this.#timer = setInterval(() => void this.tick(), intervalMs);
    void this.tick();
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }

  /** One look at the intent (never two at once; never throws). */
  tick(): Promise<void> {
    this.#running ??= this.#look()
      .catch((error: Error) => this.#deps.logger.error({ err: error }, 'self-update watch failed'))
      .finally(() => {
        this.#running = undefined;
      });
    return this.#running;
  }

  async #look(): Promise<void> {
    const deps = this.#deps;
    const intent = await deps.intents.read();
    if (!isActive(intent)) return;
    for (const step of intent.steps.slice(this.#published)) {
      await publishProgress(
        deps,
        intent,
        step.step,
        step.service,
        step.status === 'started' ? 'started' : 'done',
      );
      if (step.ms !== undefined && step.status === 'done') {
        deps.metrics.phaseDuration.observe({ phase: `self-update-${step.step}` }, step.ms / 1000);
      }
    }
    if (intent.steps.length !== this.#published) await publishInstallerStatus(deps);
    this.#published = intent.steps.length;
    if (intent.outcome) return this.#report(intent);
    const helper = await deps.deployment.helperState(intent.helper);
    if (helper === 'running' || helper === 'restarting') return;
    // The helper is gone and said nothing: start one again (it puts back whatever had begun).
    const log = await deps.deployment.helperLog(intent.helper);
    if (intent.helper_starts >= MAX_HELPER_STARTS) {
      intent.outcome = {
        result: 'failed',
        reason: `the self-update helper exited ${intent.helper_starts} times without finishing (last log: ${log.slice(-500) || 'none'}); the update system may run mixed versions: docker compose up -d restores the tagged ones`,
        at: new Date().toISOString(),
      };
      await deps.intents.write(intent);
      return this.#report(intent);
    }
    const fromNew = intent.helper_starts < HELPER_STARTS_FROM_NEW_IMAGE;
    const newInstaller = intent.services.find((s) => s.service === 'installer')?.new_image_id;
    const image = fromNew && newInstaller ? newInstaller : await deps.deployment.ownImageId();
    // Not from the start again: a helper that died puts back what it began (or finds nothing begun).
    if (intent.phase === 'started' && !fromNew) intent.phase = 'rolling_back';
    intent.helper_starts += 1;
    await deps.intents.write(intent);
    deps.logger.error(
      { helper: intent.helper, starts: intent.helper_starts, log: log.slice(-500) },
      'the self-update helper exited without an outcome; starting it again to finish or put everything back',
    );
    await deps.deployment.startHelper(intent, image);
  }

  async #report(intent: SelfUpdateIntent): Promise<void> {
    const deps = this.#deps;
    const outcome = intent.outcome as NonNullable<SelfUpdateIntent['outcome']>;
    const { release } = intent;
    const order = { v: 1 as const, release, reason: intent.reason };
    const duration = Date.now() - Date.parse(intent.started_at);
    const timings: StepTiming[] = intent.steps
      .filter((s) => s.ms !== undefined && s.status !== 'started')
      .map((s) => ({ step: `self-update-${s.step}`, service: s.service, ms: s.ms as number }));
    // The helper's last words matter only when it could not put everything back.
    const helperLog = outcome.result === 'failed' ? await deps.deployment.helperLog(intent.helper) : '';
    await deps.deployment.removeHelper(intent.helper);
    if (outcome.result === 'committed') {
      await removePrevious(deps.runtime, intent);
      const images = { ...(await deps.state.installed('updater'))?.images };
      for (const service of intent.services) images[service.service] = service.new_image_id;
      // No operator's rollback of the update system through itself: last_install is not kept for it.
      await deps.state.recordInstalled(
        'updater',
        { version: release.version, images, installed_at: outcome.at },
        null,
      );
      await record(deps, order, 'installed', duration, outcome.reason, undefined, timings);
      await deps.holds.installed(release);
    } else {
      deps.metrics.rollbacks.inc({ component: 'updater', reason: 'SELF_UPDATE_FAILED' });
      const said = `${outcome.reason}${helperLog ? ` (helper log: ${helperLog.slice(-300)})` : ''}`;
      await record(deps, order, outcome.result, duration, said, undefined, timings);
      if (intent.swapped.length > 0) await quarantine(deps, release, 'SELF_UPDATE_FAILED', outcome.reason);
      if (intent.reason !== 'request') await countAutomaticFailure(deps, release, outcome.reason);
    }
    deps.logger[outcome.result === 'committed' ? 'info' : 'error'](
      { version: release.version, result: outcome.result },
      `self-update to ${release.version}: ${outcome.result}: ${outcome.reason}`,
    );
    intent.reported_at = new Date().toISOString();
    await deps.intents.archive(intent);
    this.#published = 0;
    await publishInstallerStatus(deps);
    if (intent.next_install) {
      await this.#continueWith(intent, intent.next_install, outcome.result === 'committed');
    }
  }

  /** The backend install that waited for this self-update: queued now, or refused with the reason. */
  async #continueWith(intent: SelfUpdateIntent, job: InstallJob, committed: boolean): Promise<void> {
    const deps = this.#deps;
    if (!committed) {
      await recordRefusal(
        deps,
        job.release,
        'NEEDS_UPDATER',
        `${job.release.component} ${job.release.version} needs a newer update system, and updater ${intent.release.version} did not install (${intent.outcome?.reason}); nothing of ${job.release.component} was changed`,
      );
      return;
    }
    // An operator's job was sealed by this installer (the key is on its volume): sealed again, fresh.
    const { mac: _mac, issued_at: _issued, ...unsealed } = job;
    const next = deps.seal.verify(job) ? deps.seal.seal(unsealed) : unsealed;
    await enqueueInstall(deps.queue, next, { retry: true, replace: true });
    await decide(deps, 'scheduled', job.release, {
      reason: `updater ${intent.release.version} is installed; ${job.release.component} ${job.release.version} installs now`,
    });
  }
}

async function publishProgress(
  deps: InstallDeps,
  intent: SelfUpdateIntent,
  step: string,
  service: string,
  status: 'started' | 'done',
): Promise<void> {
  await deps.events.publish(Topics.installProgress, {
    v: 1,
    component: 'updater',
    version: intent.release.version,
    kind: 'self-update',
    step,
    service,
    status,
    index: Math.min(intent.steps.length, 199),
    of: 2 * intent.services.length + 1,
  });
}

export type { UpdaterService };
