import { readFile } from 'node:fs/promises';
import {
  AppError,
  type Decision,
  type Device,
  type DownloadComplete,
  type DownloadJob,
  type DownloadProgress,
  devicesConcerned,
  type EventSink,
  type InstallJob,
  type Logger,
  parseJsonOrUndefined,
  type ReleaseManifest,
  type ReleasePointer,
  type ReleaseRef,
  releaseManifestSchema,
  Topics,
  type UpdatePolicy,
} from '@aico-update/shared';
import { signedRelease, type TufClient, type TufSession } from '@aico-update/tuf-client';
import semver from 'semver';
import type { BlobStore } from '../adapters/blob-store.ts';
import type { DownloadState } from '../adapters/redis-state.ts';
import {
  diskShortfall,
  garbage,
  installReason,
  type NeededFile,
  planDownload,
} from '../domain/plan-download.ts';
import { ProgressTracker } from '../domain/progress.ts';
import type { DownloaderMetrics } from '../metrics.ts';
import { type ChunkedFile, ChunkedLayers, isChunked } from './chunked-layers.ts';
import { ReleaseRejected } from './release-rejected.ts';
import { signedTarget } from './signed-target.ts';

export interface DownloadDeps {
  policy: UpdatePolicy;
  client: TufClient;
  store: BlobStore;
  state: DownloadState;
  events: EventSink;
  enqueueInstall: (job: InstallJob) => Promise<void>;
  metrics: DownloaderMetrics;
  logger: Logger;
  /** Platforms whose frontend packages are fetched: those registered devices use, and the configured ones. */
  platforms: () => Promise<ReadonlySet<string>>;
  /** The registered frontend devices (which a frontend release's packages are for). */
  devices: () => Promise<Device[]>;
  /** One of the downloader's decisions, into the shared history. */
  decide: (entry: Omit<Decision, 'at' | 'service'>) => Promise<void>;
  parallelFiles: number;
  headroomBytes: number;
  progressIntervalMs: number;
}

export { ReleaseRejected } from './release-rejected.ts';

export interface DownloadResult {
  outcome: 'completed' | 'already_present';
  bytes_fetched: number;
  bytes_reused: number;
}

/**
 * Downloads one release: re-derive it from freshly verified TUF metadata (the job is only a pointer),
 * fetch what the cache lacks, verified, then announce it and queue the install per policy.
 */
export async function downloadRelease(
  deps: DownloadDeps,
  job: DownloadJob,
  signal?: AbortSignal,
): Promise<DownloadResult> {
  const pointer = job.release;
  const log = deps.logger.child({ component: pointer.component, version: pointer.version });
  const started = performance.now();
  const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;
  let tracker: ProgressTracker | undefined;
  const publishProgress = async (status: 'in_progress' | 'completed' | 'failed', message?: string) => {
    if (tracker) await emitProgress(deps, tracker.snapshot(status, message));
  };

  deps.metrics.inProgress.inc();
  try {
    const { release, ...result } = await deps.client.session(async (session) => {
      const { release, manifest, bytes: manifestBytes } = await verifiedManifest(session, job);
      const cached = await deps.store.cached();
      const platforms = { platforms: await deps.platforms() };
      if (
        (await deps.state.isDownloaded(release)) &&
        planDownload(manifest, (sha) => cached.has(sha), platforms).missing.length === 0
      ) {
        return {
          release,
          outcome: 'already_present' as const,
          bytes_fetched: 0,
          bytes_reused: 0,
          artifacts: manifest.artifacts,
        };
      }
      await collectGarbage(deps, log);
      const present = await deps.store.cached();
      const plan = planDownload(manifest, (sha) => present.has(sha), platforms);
      const free = await deps.store.freeBytes();
      const shortfall = diskShortfall(plan, await deps.store.partialBytes(), free, deps.headroomBytes);
      const newTracker = (totalBytes: number) =>
        new ProgressTracker({
          component: release.component,
          version: release.version,
          totalBytes,
          intervalMs: deps.progressIntervalMs,
          now: () => performance.now(),
        });
      if (shortfall > 0) {
        tracker = newTracker(plan.missingBytes);
        throw new AppError(
          'DISK_FULL',
          `not enough free disk for ${release.component} ${release.version}: it needs ${mib(plan.missingBytes)} plus ` +
            `${mib(deps.headroomBytes)} headroom, and ${deps.store.root} has ${mib(free)} free. Free ${mib(shortfall)} ` +
            '(or lower downloader.free_space_headroom_mib); the download is retried later. Nothing was fetched.',
        );
      }
      // Chunked layers: their indexes first (small), then what each will move on the wire is known.
      const chunked = new ChunkedLayers(deps.store, session, log);
      let fetched = await chunked.prepare(plan.all, signal);
      let wireBytes = 0;
      // Bytes a chunk delta takes from layers already cached rather than fetching them.
      let heldBytes = 0;
      for (const file of plan.missing) {
        const delta = isChunked(file) ? await chunked.plan(file) : undefined;
        wireBytes += delta ? delta.fetchBytes : file.length;
        heldBytes += delta?.heldBytes ?? 0;
      }
      tracker = newTracker(wireBytes);
      log.info(
        {
          missing_files: plan.missing.length,
          missing_bytes: plan.missingBytes,
          wire_bytes: wireBytes,
          reused_bytes: plan.reusedBytes,
        },
        `downloading ${mib(wireBytes)} for ${mib(plan.missingBytes)} of new files (${mib(plan.reusedBytes)} already cached)`,
      );
      await publishProgress('in_progress');
      await forEachLimited(plan.missing, deps.parallelFiles, async (file) => {
        fetched += isChunked(file)
          ? await fetchChunkedLayer(deps, chunked, file, tracker as ProgressTracker, signal)
          : await downloadFile(deps, session, file, tracker as ProgressTracker, signal);
      });
      // The signed bytes, as they are: the installer checks them against the signed digest again.
      await deps.store.saveManifest(release.component, release.version, manifestBytes);
      deps.metrics.bytesSaved.inc(plan.reusedBytes + heldBytes);
      return {
        release,
        outcome: 'completed' as const,
        bytes_fetched: fetched,
        bytes_reused: plan.reusedBytes + heldBytes,
        artifacts: manifest.artifacts,
      };
    });

    await deps.state.markDownloaded(release);
    const reason = installReason(release, deps.policy);
    if (reason) await deps.enqueueInstall({ v: 1, release: pointerOf(release), reason });
    tracker ??= new ProgressTracker({
      component: release.component,
      version: release.version,
      totalBytes: 0,
      intervalMs: 0,
      now: () => 0,
    });
    await publishProgress('completed');
    const forDevices = devicesConcerned(await deps.devices(), release, result.artifacts);
    const complete: DownloadComplete = {
      v: 1,
      release,
      bytes_fetched: result.bytes_fetched,
      bytes_reused: result.bytes_reused,
      duration_ms: Math.round(performance.now() - started),
      install: reason ?? 'waits',
      ...(forDevices.length > 0 ? { devices: forDevices } : {}),
    };
    await deps.events.publish(
      Topics.downloadComplete,
      complete,
      `download-complete-${release.component}-${release.version}`,
    );
    if (result.outcome === 'completed' || reason) {
      await deps.decide({
        kind: 'downloaded',
        component: release.component,
        version: release.version,
        reason: `${result.outcome === 'completed' ? `downloaded and verified ${mib(result.bytes_fetched)} (${mib(result.bytes_reused)} already cached)` : 'already downloaded and verified'}; ${reason ? `install queued (${reason === 'critical' ? 'a critical release, update.critical_install' : 'update.auto_install'})` : 'the install waits'}`,
      });
    }
    if (!reason && result.outcome === 'completed') {
      await deps.decide({
        kind: 'waiting_for_user',
        component: release.component,
        version: release.version,
        reason: `${release.component} ${release.version} is downloaded; ${release.critical ? 'update.critical_install' : 'update.auto_install'} is off, so it waits until someone asks for its install (update.install.request)`,
      });
    }
    deps.metrics.downloads.inc({ outcome: result.outcome });
    if (result.outcome === 'completed') deps.metrics.duration.observe((performance.now() - started) / 1000);
    await refreshCacheGauges(deps);
    log.info(
      { ...complete, release: undefined },
      `download ${result.outcome}: ${release.component} ${release.version}`,
    );
    return result;
  } catch (error) {
    deps.metrics.downloads.inc({ outcome: 'failed' });
    const message = (error as Error).message;
    log.error({ err: error, code: (error as AppError).code }, `download failed: ${message}`);
    await publishProgress('failed', message).catch(() => undefined);
    throw error;
  } finally {
    deps.metrics.inProgress.dec();
  }
}

function pointerOf(release: ReleaseRef): ReleasePointer {
  return { component: release.component, version: release.version };
}

/** `update.download.progress`, and the progress gauge the dashboard shows. */
function emitProgress(deps: DownloadDeps, progress: DownloadProgress): Promise<void> {
  deps.metrics.progress.set({ component: progress.component }, progress.percent / 100);
  return deps.events.publish(Topics.downloadProgress, progress);
}

/**
 * The release a job points at, as the trusted metadata signs it now (its summary and its manifest's
 * digest); a job naming a release that is not signed is refused for good.
 */
async function verifiedManifest(
  session: TufSession,
  job: DownloadJob,
): Promise<{ release: ReleaseRef; manifest: ReleaseManifest; bytes: Buffer }> {
  const { component, version } = job.release;
  const release = await signedRelease(session, job.release);
  const info = release && (await session.targetInfo(release.target.path));
  if (!release || !info) {
    throw new ReleaseRejected(
      'RELEASE_NOT_SIGNED',
      `${component} ${version}: the trusted metadata signs no such release (withdrawn, or never published); ` +
        'the job is refused (nothing is downloaded that TUF does not sign)',
    );
  }
  const bytes = await readFile(await session.fetchTarget(info));
  const parsed = releaseManifestSchema.safeParse(parseJsonOrUndefined(bytes.toString('utf8')));
  if (!parsed.success || parsed.data.component !== component || parsed.data.version !== version) {
    throw new ReleaseRejected(
      'RELEASE_MANIFEST_INVALID',
      `the signed manifest ${release.target.path} is not a manifest of this release`,
    );
  }
  return { release, manifest: parsed.data, bytes };
}

/** Counts bytes as they arrive: the metric, the release's progress, an event when one is due. */
function countWireBytes(deps: DownloadDeps, tracker: ProgressTracker): (bytes: number) => void {
  return (bytes) => {
    deps.metrics.bytesFetched.inc(bytes);
    tracker.add(bytes);
    if (tracker.due()) void emitProgress(deps, tracker.snapshot()).catch(() => undefined);
  };
}

async function downloadFile(
  deps: DownloadDeps,
  session: TufSession,
  file: NeededFile,
  tracker: ProgressTracker,
  signal: AbortSignal | undefined,
): Promise<number> {
  const info = await signedTarget(session, file);
  const outcome = await session.downloadTarget(info, deps.store.pathOf(file.sha256), {
    partialDir: deps.store.partialsDir,
    ...(signal ? { signal } : {}),
    onBytes: countWireBytes(deps, tracker),
  });
  if (outcome.resumedFromBytes > 0) {
    deps.metrics.resumes.inc();
    deps.metrics.bytesResumed.inc(outcome.resumedFromBytes);
    tracker.add(outcome.resumedFromBytes);
  }
  deps.metrics.verificationFailures.inc(outcome.restarts);
  return outcome.fetchedBytes;
}

async function fetchChunkedLayer(
  deps: DownloadDeps,
  chunked: ChunkedLayers,
  file: ChunkedFile,
  tracker: ProgressTracker,
  signal: AbortSignal | undefined,
): Promise<number> {
  const outcome = await chunked.fetch(file, {
    ...(signal ? { signal } : {}),
    onBytes: countWireBytes(deps, tracker),
  });
  if (outcome.fallbackChunks > 0) {
    deps.logger.warn(
      { layer: file.sha256, fallback_chunks: outcome.fallbackChunks },
      `${outcome.fallbackChunks} chunk(s) of layer ${file.sha256.slice(0, 12)} were no longer in the cached layers that held them; fetched them instead`,
    );
  }
  return outcome.fetchedBytes;
}

/** Deletes cached blobs no kept release needs: never the installed version's (rollback) or a pending one's. */
export async function collectGarbage(
  deps: Pick<DownloadDeps, 'store' | 'state'>,
  log: Logger,
): Promise<number> {
  const installed = await deps.state.installed();
  const kept: ReleaseManifest[] = [];
  for (const { component, version } of await deps.store.manifestNames()) {
    const current = installed[component as keyof typeof installed];
    const keep = !current || !semver.valid(version) || semver.gte(version, current);
    if (!keep) {
      await deps.store.removeManifest(component, version);
      await deps.state.forget(component, version);
      continue;
    }
    // A manifest in the cache that does not parse keeps nothing: the next download fetches it again.
    const parsed = releaseManifestSchema.safeParse(
      parseJsonOrUndefined(await readFile(deps.store.manifestPath(component, version), 'utf8')),
    );
    if (parsed.success) kept.push(parsed.data);
    else log.warn({ component, version }, 'a cached manifest is not valid; ignoring it');
  }
  const doomed = garbage([...(await deps.store.cached())], kept);
  for (const sha256 of doomed) await deps.store.remove(sha256);
  // A layer's chunk index goes with the layer: the chunks it lists are no longer held.
  const doomedIndexes = garbage([...(await deps.store.cachedIndexes())], kept);
  for (const sha256 of doomedIndexes) await deps.store.removeIndex(sha256);
  if (doomed.length || doomedIndexes.length)
    log.info(
      { removed: doomed.length, removed_indexes: doomedIndexes.length },
      'removed cached blobs and chunk indexes no kept release needs',
    );
  return doomed.length;
}

async function refreshCacheGauges(deps: DownloadDeps): Promise<void> {
  deps.metrics.cacheSize.set(await deps.store.sizeBytes());
  deps.metrics.cacheFree.set(await deps.store.freeBytes());
}

async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  run: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await run(items[next++] as T);
  });
  await Promise.all(workers);
}
