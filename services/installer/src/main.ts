import {
  connectInfrastructure,
  createLogger,
  createMetricsRegistry,
  createServiceApp,
  ExtraTopics,
  installJobSchema,
  installRequestSchema,
  type Logger,
  listen,
  Queues,
  type RestartScheduled,
  type RunningHttpService,
  rollbackRequestSchema,
  runService,
  Shutdown,
  StateKeys,
  serveCommand,
  Topics,
} from '@aico-update/shared';
import { DelayedError, Queue, UnrecoverableError, Worker } from 'bullmq';
import { DockerRuntime } from './adapters/docker-runtime.ts';
import { type InstallerConfig, installerConfigSchema } from './config.ts';
import { installWindow } from './domain/install-window.ts';
import { requestInstall, requestRollback } from './handlers/commands.ts';
import {
  HISTORY_KEY,
  InstallFailed,
  installRelease,
  recoverInterrupted,
  rollbackLastInstall,
} from './handlers/install-release.ts';
import { createInstallDeps } from './install-deps.ts';
import { showInstalledVersion } from './metrics.ts';

export type RunningInstaller = RunningHttpService;

export const INSTALLER_QUEUE_GROUP = 'aico-update-installer';

/** The composition root: config → logger → Docker, Redis, NATS → install worker (one install at a time). */
export async function startInstaller(
  config: InstallerConfig,
  options: { logger?: Logger } = {},
): Promise<RunningInstaller> {
  const logger = options.logger ?? createLogger('installer', config.log.level);
  const shutdown = new Shutdown(logger);
  const registry = createMetricsRegistry('installer');
  try {
    const runtime = new DockerRuntime(config.installer.docker_socket);
    await runtime.ping().catch((error: Error) => {
      throw new Error(
        `cannot reach the Docker Engine at ${config.installer.docker_socket} (${error.message}); check installer.docker_socket and that the socket is mounted`,
      );
    });
    const { redis, nc, readiness } = await connectInfrastructure(config, 'installer', logger, shutdown);

    const deps = createInstallDeps(config, { runtime, redis, nc, registry, logger });
    const { events } = deps;
    for (const [component, version] of Object.entries(await redis.hgetall(StateKeys.installed))) {
      showInstalledVersion(deps.metrics, component, version);
    }
    // Before taking any job: finish or compensate an install a crash interrupted.
    const recovered = await recoverInterrupted(deps);
    if (recovered !== 'none') logger.warn({ recovered }, 'recovered an interrupted install');

    const worker = new Worker(
      Queues.install,
      async (job, token) => {
        if (job.name === 'rollback') {
          const request = rollbackRequestSchema.safeParse(job.data);
          if (!request.success)
            throw new UnrecoverableError(`malformed rollback job ${job.id}: ${request.error.message}`);
          return await unrecoverableOnFailure(() => rollbackLastInstall(deps, request.data));
        }
        const parsed = installJobSchema.safeParse(job.data);
        if (!parsed.success)
          throw new UnrecoverableError(`malformed install job ${job.id}: ${parsed.error.message}`);
        const { release, reason } = parsed.data;
        // Critical and requested installs run now; other automatic ones only in the preferred window.
        const now = new Date();
        const window = installWindow(
          now,
          config.update.preferred_time,
          config.installer.timezone,
          config.installer.window_minutes,
        );
        const at = reason === 'auto_install' && !window.inWindow ? window.nextStart : now;
        const scheduled: RestartScheduled = {
          v: 1,
          component: release.component,
          version: release.version,
          scheduled_for: at.toISOString(),
          reason,
        };
        await events.publish(
          Topics.restartScheduled,
          scheduled,
          `restart-scheduled-${job.id}-${at.getTime()}`,
        );
        if (at > now) {
          logger.info(
            { ...scheduled },
            `install of ${release.component} ${release.version} waits for the preferred window`,
          );
          await job.moveToDelayed(at.getTime(), token);
          throw new DelayedError();
        }
        return await unrecoverableOnFailure(() => installRelease(deps, parsed.data));
      },
      // One install at a time per host; an install can take minutes (health gate and soak).
      {
        connection: redis,
        concurrency: 1,
        lockDuration: config.installer.lock_seconds * 1000,
        stalledInterval: config.installer.lock_seconds * 1000,
      },
    );
    worker.on('error', (error) => logger.error({ err: error }, 'install worker error'));
    shutdown.add('install worker', () => worker.close());

    const queue = new Queue(Queues.install, { connection: redis });
    shutdown.add('install queue', () => queue.close());
    const commands = { redis, queue, cacheDir: config.installer.cache_dir };
    const commandOptions = { queue: INSTALLER_QUEUE_GROUP, logger };
    const subscriptions = [
      serveCommand(
        nc,
        Topics.installRequest,
        installRequestSchema,
        (r) => requestInstall(commands, r),
        commandOptions,
      ),
      serveCommand(
        nc,
        ExtraTopics.rollbackRequest,
        rollbackRequestSchema,
        (r) => requestRollback(commands, r),
        commandOptions,
      ),
    ];
    shutdown.add('commands', async () => {
      for (const sub of subscriptions) sub.unsubscribe();
    });
    // Started means answering: make sure the server has the subscriptions before saying so.
    await nc.flush();

    const app = createServiceApp({
      registry,
      logger,
      readiness: [{ name: 'docker', check: () => runtime.ping() }, ...readiness],
      routes: (app) => {
        app.get('/status', async (_req, res, next) => {
          try {
            res.json({
              installed: await redis.hgetall(StateKeys.installed),
              history: (await redis.lrange(HISTORY_KEY, 0, 49)).map((entry) => JSON.parse(entry)),
            });
          } catch (error) {
            next(error);
          }
        });
      },
    });
    const http = await listen(app, config.http.host, config.http.port);
    shutdown.add('http', () => http.close());
    logger.info({ port: http.port, services: config.installer.services }, 'installer started');
    return { port: http.port, stop: () => shutdown.stop() };
  } catch (error) {
    await shutdown.stop();
    throw error;
  }
}

/** A failed install or rollback was undone or changed nothing: it is not retried automatically. */
async function unrecoverableOnFailure<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof InstallFailed) throw new UnrecoverableError(`${error.code}: ${error.message}`);
    throw error;
  }
}

if (import.meta.main) {
  await runService('installer', installerConfigSchema, (config, logger) =>
    startInstaller(config, { logger }),
  );
}
