import {
  cacheMirrorDir,
  connectInfrastructure,
  createLogger,
  createMetricsRegistry,
  createServiceApp,
  type Decision,
  type DownloadJob,
  downloadJobSchema,
  downloadRequestSchema,
  EventPublisher,
  ExtraTopics,
  enqueueInstall,
  LiveSettings,
  type Logger,
  listen,
  Queues,
  type RunningHttpService,
  readDevices,
  readDownloaded,
  readInstallerStatus,
  recordDecision,
  runService,
  Shutdown,
  serveCommand,
} from '@aico-update/shared';
import { createTufClient, RateLimiter } from '@aico-update/tuf-client';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { BlobStore } from './adapters/blob-store.ts';
import { DownloadState } from './adapters/redis-state.ts';
import { type DownloaderConfig, downloaderConfigSchema } from './config.ts';
import { type DownloadDeps, downloadRelease, ReleaseRejected } from './handlers/download-release.ts';
import { requestDownload } from './handlers/download-requests.ts';
import { createDownloaderMetrics } from './metrics.ts';

export type RunningDownloader = RunningHttpService;

/** The composition root: config → logger, metrics → adapters → handler → BullMQ worker. */
export async function startDownloader(
  config: DownloaderConfig,
  options: { logger?: Logger } = {},
): Promise<RunningDownloader> {
  const logger = options.logger ?? createLogger('downloader', config.log.level);
  const shutdown = new Shutdown(logger);
  const registry = createMetricsRegistry('downloader');
  const metrics = createDownloaderMetrics(registry);
  try {
    const { redis, nc, readiness } = await connectInfrastructure(config, 'downloader', logger, shutdown);

    const store = new BlobStore(config.downloader.cache_dir);
    await store.init();
    const kib = config.downloader.max_kib_per_second;
    const { client, fetcher } = createTufClient(config, {
      userAgent: 'aico-update-downloader',
      logger,
      rateLimiter: kib > 0 ? new RateLimiter(kib * 1024) : undefined,
      mirrorDir: cacheMirrorDir(config.downloader.cache_dir),
    });
    shutdown.add('fetcher', () => fetcher.close());
    // The installer verifies every release against its own trusted state, from the metadata mirror in
    // the cache: kept fresh here (timestamps are short-lived), so an install in the night window finds
    // unexpired metadata. Every download refreshes it too.
    const refreshMirror = () =>
      client
        .session(async () => undefined)
        .catch((error: Error) =>
          logger.warn({ err: error }, `TUF metadata refresh failed: ${error.message}`),
        );
    void refreshMirror();
    const refreshMinutes = config.downloader.metadata_refresh_minutes;
    if (refreshMinutes > 0) {
      const timer = setInterval(refreshMirror, refreshMinutes * 60_000);
      shutdown.add('metadata refresh', async () => clearInterval(timer));
    }

    const installs = new Queue(Queues.install, { connection: redis });
    shutdown.add('install queue', () => installs.close());
    const state = new DownloadState(redis);
    // The configuration overlaid by the user's settings (the installer keeps them), kept current.
    const settings = new LiveSettings(config.update, logger);
    shutdown.add('settings', await settings.follow(redis, nc));
    const decide = async (entry: Omit<Decision, 'at' | 'service'>) => {
      await recordDecision(redis, 'downloader', entry).catch((error: Error) =>
        logger.warn({ err: error }, 'could not record a decision'),
      );
    };
    const deps: DownloadDeps = {
      policy: settings.policy,
      decide,
      devices: () => readDevices(redis),
      platforms: async () =>
        new Set([
          ...config.downloader.frontend_platforms,
          ...(await readDevices(redis)).map((d) => d.platform),
        ]),
      client,
      store,
      state,
      events: new EventPublisher(nc),
      enqueueInstall: async (job) => {
        await enqueueInstall(installs, job);
      },
      metrics,
      logger,
      parallelFiles: config.downloader.parallel_files,
      headroomBytes: config.downloader.free_space_headroom_mib * 1024 * 1024,
      progressIntervalMs: config.downloader.progress_interval_ms,
    };

    const lockMs = config.downloader.lock_seconds * 1000;
    const worker = new Worker<DownloadJob>(
      Queues.download,
      async (job, _token, signal) => {
        const parsed = downloadJobSchema.safeParse(job.data);
        if (!parsed.success)
          throw new UnrecoverableError(`malformed download job ${job.id}: ${parsed.error.message}`);
        try {
          return await downloadRelease(deps, parsed.data, signal);
        } catch (error) {
          if (error instanceof ReleaseRejected) throw new UnrecoverableError(error.message);
          throw error;
        }
      },
      {
        connection: redis,
        concurrency: config.downloader.concurrency,
        lockDuration: lockMs,
        stalledInterval: lockMs,
      },
    );
    worker.on('error', (error) => logger.error({ err: error }, 'download worker error'));
    worker.on('failed', (job, error) => {
      const pointer = downloadJobSchema.safeParse(job?.data);
      if (!job || !pointer.success) return;
      const attempts = job.opts.attempts ?? 1;
      const final = error instanceof UnrecoverableError || job.attemptsMade >= attempts;
      void decide({
        kind: 'download_failed',
        ...pointer.data.release,
        code: (error as { code?: string }).code ?? 'DOWNLOAD_FAILED',
        reason: `${error.message}; ${final ? `given up after ${job.attemptsMade} attempt(s): retry it with update.download.request` : `attempt ${job.attemptsMade} of ${attempts}, retried automatically`}`,
      });
    });
    shutdown.add('download worker', () => worker.close());

    const downloadQueue = new Queue(Queues.download, { connection: redis });
    shutdown.add('download queue', () => downloadQueue.close());
    const requests = serveCommand(
      nc,
      ExtraTopics.downloadRequest,
      downloadRequestSchema,
      (request) =>
        requestDownload(
          {
            client,
            queue: downloadQueue,
            retryDelayMs: config.downloader.retry_delay_seconds * 1000,
            state,
            policy: settings.policy,
            holds: async () => (await readInstallerStatus(redis))?.holds ?? [],
            decide,
            logger,
          },
          request,
        ),
      { queue: 'aico-update-downloader', logger },
    );
    shutdown.add('download requests', async () => requests.unsubscribe());
    await nc.flush();

    const app = createServiceApp({
      registry,
      logger,
      readiness,
      routes: (app) => {
        app.get('/status', async (_req, res, next) => {
          try {
            res.json({
              downloaded: await readDownloaded(redis),
              cache: {
                dir: store.root,
                size_bytes: await store.sizeBytes(),
                free_bytes: await store.freeBytes(),
              },
            });
          } catch (error) {
            next(error);
          }
        });
      },
    });
    const http = await listen(app, config.http.host, config.http.port);
    shutdown.add('http', () => http.close());
    metrics.cacheSize.set(await store.sizeBytes());
    metrics.cacheFree.set(await store.freeBytes());
    logger.info({ port: http.port, cache_dir: store.root, max_kib_per_second: kib }, 'downloader started');
    return { port: http.port, stop: () => shutdown.stop() };
  } catch (error) {
    await shutdown.stop();
    throw error;
  }
}

if (import.meta.main) {
  await runService('downloader', downloaderConfigSchema, (config, logger) =>
    startDownloader(config, { logger }),
  );
}
