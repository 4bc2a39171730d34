import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AppError,
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
import type { SelfUpdateIntent, SelfUpdateService } from '../self-update/intent.ts';
import { decide, record, recordRefusal } from './history.ts';
import {
  type AuthorizedInstall,
  authorizeInstall,
  type InstallDeps,
  type InstallOutcome,
} from './install-release.ts';
import { loadImage } from './load-image.ts';
import { requireHealthy } from './preflight-health.ts';

/*
 * The update system updates itself. The installer cannot swap its own container, so it verifies and
 * loads the new images, writes a durable intent and starts a helper container from the NEW installer
 * image (self-update/helper.ts), which swaps the services and writes the outcome. Whichever installer
 * runs afterwards (the new one after a commit, the old one after a rollback) reports it: history,
 * events, metrics, its record of the installed version; then removes the helper and the old containers,
 * and queues the backend install that waited for this updater, if one did.
 */

/**
 * Verifies and loads the release's images, writes the intent and starts the helper. A failure before
 * the helper runs changed nothing: it is recorded (history, event, metric) and thrown as InstallFailed.
 */
export async function startSelfUpdate(
  deps: InstallDeps,
  authorized: AuthorizedInstall,
  nextInstall?: InstallJob,
): Promise<InstallOutcome> {
  const started = Date.now();
  try {
    return await beginSelfUpdate(deps, authorized, nextInstall);
  } catch (error) {
    const failure =
      error instanceof InstallFailed
        ? error
        : new InstallFailed(
            error instanceof AppError ? error.code : 'SELF_UPDATE_FAILED',
            `${(error as Error).message}; nothing was swapped`,
            false,
            { cause: error },
          );
    deps.logger.error({ err: error, code: failure.code }, `self-update not started: ${failure.message}`);
    await record(
      deps,
      authorized.order,
      'failed',
      Date.now() - started,
      `${failure.code}: ${failure.message}`,
    );
    if (nextInstall) {
      await recordRefusal(
        deps,
        nextInstall.release,
        'NEEDS_UPDATER',
        `${nextInstall.release.component} ${nextInstall.release.version} needs a newer update system, and updater ${authorized.order.release.version} could not start (${failure.message}); nothing was changed`,
      );
    }
    throw failure;
  }
}

async function beginSelfUpdate(
  deps: InstallDeps,
  authorized: AuthorizedInstall,
  nextInstall: InstallJob | undefined,
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
    await requireHealthy(
      deps.runtime,
      running.container,
      deps.healthTimeoutMs,
      'the update system updates itself only from a healthy state',
    );
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
  // The helper is the new installer's code; a release that does not change the installer runs this one's.
  try {
    await deps.intents.whileStartingHelper(async () => {
      await deps.intents.write(intent);
      await deps.deployment.startHelper(intent, installerImage ?? (await deps.deployment.ownImageId()));
    });
  } catch (error) {
    // Nothing was swapped: the helper (if the engine created it) and the intent go, and the install
    // fails with the engine's reason.
    await deps.deployment
      .removeHelper(intent.helper)
      .catch((e: Error) =>
        deps.logger.warn({ err: e, helper: intent.helper }, 'could not remove the helper'),
      );
    await deps.intents.clear();
    throw new InstallFailed(
      'HELPER_FAILED',
      `the self-update helper ${intent.helper} could not be started: ${(error as Error).message}. Nothing was swapped`,
      false,
      { cause: error },
    );
  }
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

/** One step of a self-update as `update.install.progress` (kind self-update). */
export async function publishProgress(
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
