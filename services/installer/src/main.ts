import {
  connectInfrastructure,
  createLogger,
  createMetricsRegistry,
  createServiceApp,
  ExtraTopics,
  installCancelSchema,
  installJobSchema,
  installPlanRequestSchema,
  installRequestSchema,
  installResumeSchema,
  type Logger,
  listen,
  parseJsonOrUndefined,
  Queues,
  type RestartScheduled,
  type RunningHttpService,
  releaseSkipSchema,
  rollbackJobSchema,
  rollbackRequestSchema,
  runService,
  Shutdown,
  StateKeys,
  Subjects,
  serveCommand,
  settingsRequestSchema,
  Topics,
} from '@aico-update/shared';
import { DelayedError, UnrecoverableError, Worker } from 'bullmq';
import semver from 'semver';
import { DockerRuntime } from './adapters/docker-runtime.ts';
import { type InstallerConfig, installerConfigSchema } from './config.ts';
import { installWindow } from './domain/install-window.ts';
import {
  announceSchedule,
  cancelInstall,
  changeSettings,
  publishSettings,
  requestInstall,
  requestRollback,
  resumeInstalls,
  skipRelease,
} from './handlers/commands.ts';
import { previewInstall } from './handlers/dry-run.ts';
import { decide } from './handlers/history.ts';
import { publishInstallerStatus } from './handlers/holds.ts';
import {
  authorizeInstall,
  HISTORY_KEY,
  InstallFailed,
  installedVersion,
  recoverInterrupted,
  rollbackLastInstall,
  runInstall,
} from './handlers/install-release.ts';
import { IntegrityWatch } from './handlers/integrity.ts';
import { installUpdaterFirst } from './handlers/self-update.ts';
import { SelfUpdateWatch } from './handlers/self-update-watch.ts';
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

    const deps = await createInstallDeps(config, { runtime, redis, nc, registry, logger });
    const { events } = deps;
    // The update system's own version, for the checker (it offers updater releases newer than it).
    await redis.hset(StateKeys.installed, 'updater', (await installedVersion(deps, 'updater')) as string);
    for (const [component, version] of Object.entries(await redis.hgetall(StateKeys.installed))) {
      showInstalledVersion(deps.metrics, component, version);
    }
    // Before taking any job: finish or compensate an install a crash interrupted.
    const recovered = await recoverInterrupted(deps);
    if (recovered !== 'none') logger.warn({ recovered }, 'recovered an interrupted install');
    // Then, and after every check and install: does every managed container run its signed image?
    const integrity = new IntegrityWatch(deps);
    await integrity.check();
    // A self-update under way (this may be the new installer it started, or the old one it put back).
    const selfUpdate = new SelfUpdateWatch(deps);
    selfUpdate.start();
    shutdown.add('self-update watch', () => selfUpdate.stop());
    const checks = nc.subscribe(Subjects.event(Topics.checkResponse), {
      callback: () =>
        void integrity
          .check()
          .catch((error: Error) => logger.error({ err: error }, 'integrity check failed')),
    });
    shutdown.add('integrity watch', async () => checks.unsubscribe());

    const worker = new Worker(
      Queues.install,
      async (job, token) => {
        // Nothing else runs while the update system swaps itself: the job waits for the outcome.
        if (await selfUpdate.active()) {
          await job.moveToDelayed(Date.now() + 5000, token);
          throw new DelayedError();
        }
        if (job.name === 'rollback') {
          const request = rollbackJobSchema.safeParse(job.data);
          if (!request.success)
            throw new UnrecoverableError(`malformed rollback job ${job.id}: ${request.error.message}`);
          // Only a rollback this installer queued for an operator: a job anyone else put in Redis is not.
          if (!deps.seal.verifyRollback(request.data)) {
            logger.error({ job_id: job.id }, 'refused a rollback job the installer did not seal');
            throw new UnrecoverableError(
              `ROLLBACK_NOT_AUTHORIZED: rollback job ${job.id} was not queued by this installer; ask with update.rollback.request`,
            );
          }
          return await unrecoverableOnFailure(() => rollbackLastInstall(deps, request.data));
        }
        const parsed = installJobSchema.safeParse(job.data);
        if (!parsed.success)
          throw new UnrecoverableError(`malformed install job ${job.id}: ${parsed.error.message}`);
        // The job is a pointer: what it may do is decided from the signed release and the policy.
        const authorized = await unrecoverableOnFailure(() => authorizeInstall(deps, parsed.data));
        const { release, reason } = authorized.order;
        // A backend that needs a newer update system: the updater goes first, the backend after it.
        const needs = authorized.manifest.needs_updater;
        const updater = await installedVersion(deps, 'updater');
        if (release.component === 'backend' && needs && !(updater && semver.satisfies(updater, needs))) {
          return await unrecoverableOnFailure(() =>
            installUpdaterFirst(deps, authorized, parsed.data, needs, updater),
          );
        }
        // An operator's install waits for the time picked (the queue delays it; this holds it if promoted).
        const now = new Date();
        const picked = parsed.data.scheduled_for ? new Date(parsed.data.scheduled_for) : undefined;
        if (reason === 'request' && picked && picked.getTime() > now.getTime() + 1000) {
          await job.moveToDelayed(picked.getTime(), token);
          throw new DelayedError();
        }
        // Critical and requested installs run now; other automatic ones only in the preferred window.
        const window = installWindow(
          now,
          deps.policy.preferred_time,
          deps.window.timezone,
          deps.window.minutes,
        );
        if (reason === 'auto_install' && !window.inWindow) {
          const at = window.nextStart;
          const message = `${release.component} ${release.version} installs by itself (update.auto_install) in the update.preferred_time window: ${deps.policy.preferred_time} ${deps.window.timezone}, for ${deps.window.minutes} minutes; it waits until ${at.toISOString()}`;
          logger.info({ component: release.component, version: release.version }, message);
          // The time goes into the job so that the schedule shows it (an automatic job carries no seal).
          await job.updateData({ ...parsed.data, scheduled_for: at.toISOString() });
          await job.moveToDelayed(at.getTime(), token);
          await announceSchedule(deps, release, at, reason, 'scheduled', message);
          await decide(deps, 'held_for_window', release, {
            reason: message,
            scheduled_for: at.toISOString(),
          });
          await publishInstallerStatus(deps);
          throw new DelayedError();
        }
        if (reason !== 'request') {
          const scheduled: RestartScheduled = {
            v: 1,
            component: release.component,
            version: release.version,
            scheduled_for: now.toISOString(),
            reason,
            change: 'scheduled',
            message: `${release.component} ${release.version} installs now (${reason === 'critical' ? 'a critical release, update.critical_install' : 'update.auto_install, inside the window'})`,
          };
          await events.publish(
            Topics.restartScheduled,
            scheduled,
            `restart-scheduled-${job.id}-${now.getTime()}`,
          );
        }
        try {
          return await unrecoverableOnFailure(() => runInstall(deps, authorized));
        } finally {
          void integrity
            .check()
            .catch((error: Error) => logger.error({ err: error }, 'integrity check failed'));
        }
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

    const { queue } = deps;
    shutdown.add('install queue', () => queue.close());
    const commands = { queue, install: deps };
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
      serveCommand(
        nc,
        ExtraTopics.installCancel,
        installCancelSchema,
        (r) => cancelInstall(commands, r),
        commandOptions,
      ),
      serveCommand(
        nc,
        ExtraTopics.installPlan,
        installPlanRequestSchema,
        (r) => previewInstall(deps, r),
        commandOptions,
      ),
      serveCommand(
        nc,
        ExtraTopics.releaseSkip,
        releaseSkipSchema,
        (r) => skipRelease(commands, r),
        commandOptions,
      ),
      serveCommand(
        nc,
        ExtraTopics.installResume,
        installResumeSchema,
        (r) => resumeInstalls(commands, r),
        commandOptions,
      ),
      serveCommand(
        nc,
        ExtraTopics.settings,
        settingsRequestSchema,
        (r) => changeSettings(commands, r),
        commandOptions,
      ),
    ];
    // Every service takes the settings in force from here (the Redis copy, then the announcements).
    await publishSettings(deps);
    await publishInstallerStatus(deps);
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
            const trusted = await deps.trust.trusted();
            res.json({
              installed: await redis.hgetall(StateKeys.installed),
              integrity: integrity.last ?? null,
              settings: deps.settings.state,
              self_update: (await deps.intents.read()) ?? (await deps.intents.last()) ?? null,
              holds: await deps.holds.holds(),
              paused: await deps.holds.paused(),
              trusted_metadata: trusted
                ? { versions: trusted.versions, expires_at: trusted.expiresAt.toISOString() }
                : null,
              history: (await redis.lrange(HISTORY_KEY, 0, 49)).map((entry) => parseJsonOrUndefined(entry)),
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
