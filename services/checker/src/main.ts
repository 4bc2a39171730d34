import {
  type CheckRequest,
  type CheckResponse,
  connectInfrastructure,
  createLogger,
  createMetricsRegistry,
  createServiceApp,
  EventPublisher,
  LiveSettings,
  type Logger,
  listen,
  type RunningHttpService,
  readDevices,
  runService,
  Shutdown,
} from '@aico-update/shared';
import { createTufClient } from '@aico-update/tuf-client';
import { BullDownloadQueue, CheckQueue } from './adapters/bullmq-queues.ts';
import { serveCheckRequests } from './adapters/nats-check-requests.ts';
import { RedisCheckState } from './adapters/redis-state.ts';
import { TufReleaseSource } from './adapters/tuf-release-source.ts';
import { type CheckerConfig, checkerConfigSchema } from './config.ts';
import { CheckRequests } from './handlers/check-requests.ts';
import { type CheckDeps, runCheck } from './handlers/run-check.ts';
import { statusRoutes } from './http/status-routes.ts';
import { createCheckerMetrics } from './metrics.ts';

export interface RunningChecker extends RunningHttpService {
  /** Runs a check now, as a forced request would (tests and the demo). */
  checkNow(request?: Partial<CheckRequest>): Promise<CheckResponse>;
}

export interface StartOptions {
  logger?: Logger;
  /** Skip the BullMQ schedule and startup check (tests that drive checks themselves). */
  schedule?: boolean;
}

/** The composition root: config → logger, metrics → adapters → handlers → start. */
export async function startChecker(
  config: CheckerConfig,
  options: StartOptions = {},
): Promise<RunningChecker> {
  const logger = options.logger ?? createLogger('checker', config.log.level);
  const shutdown = new Shutdown(logger);
  const registry = createMetricsRegistry('checker');
  const metrics = createCheckerMetrics(registry);
  try {
    const { redis, nc, readiness } = await connectInfrastructure(config, 'checker', logger, shutdown);

    const state = new RedisCheckState(redis);
    await state.seedInstalled(config.installed);

    const { client, fetcher } = createTufClient(config, {
      userAgent: 'aico-update-checker',
      logger,
    });
    shutdown.add('fetcher', () => fetcher.close());

    const downloads = new BullDownloadQueue(redis);
    shutdown.add('download queue', () => downloads.close());
    // The configuration overlaid by the user's settings (the installer keeps them), kept current.
    const settings = new LiveSettings(config.update, logger);
    shutdown.add('settings', await settings.follow(redis, nc));
    const deps: CheckDeps = {
      policy: settings.policy,
      devices: () => readDevices(redis),
      catalog: {},
      source: new TufReleaseSource(client, logger),
      installed: state,
      state,
      events: new EventPublisher(nc),
      downloads,
      clock: { now: () => new Date() },
      metrics,
      logger,
    };
    const requests = new CheckRequests({
      run: (request) =>
        runCheck(deps, {
          v: 1,
          reason: 'request',
          forced: request.forced,
          ...(request.request_id ? { request_id: request.request_id } : {}),
        }),
      state,
      clock: deps.clock,
      cacheSeconds: config.checker.request_cache_seconds,
    });

    const checks = new CheckQueue(redis);
    shutdown.add('check queue', () => checks.close());
    if (options.schedule !== false) {
      checks.start(redis, (job) => runCheck(deps, job));
      await checks.follow(settings.policy);
      settings.onChange((policy, previous) => {
        if (policy.auto_check === previous.auto_check && policy.check_interval === previous.check_interval)
          return;
        void checks
          .follow(policy)
          .then(() =>
            logger.info(
              { auto_check: policy.auto_check, check_interval_hours: policy.check_interval },
              'check schedule changed',
            ),
          )
          .catch((error: Error) => logger.error({ err: error }, 'could not change the check schedule'));
      });
      if (config.checker.check_on_start) await checks.checkSoon();
    }

    const subscription = serveCheckRequests(
      nc,
      requests,
      deps.catalog,
      async () => (await state.get()).backend,
      metrics,
      logger,
    );
    shutdown.add('check requests', () => subscription.drain());
    // Started means answering: make sure the server has the subscription before saying so.
    await nc.flush();

    const app = createServiceApp({
      registry,
      logger,
      readiness,
      routes: statusRoutes({ state, client, requests }),
    });
    const http = await listen(app, config.http.host, config.http.port);
    shutdown.add('http', () => http.close());
    logger.info(
      {
        port: http.port,
        channel: settings.policy.channel,
        check_interval_hours: settings.policy.check_interval,
        auto_check: settings.policy.auto_check,
        metadata_url: config.update_server.metadata_url,
      },
      'checker started',
    );
    return {
      port: http.port,
      checkNow: (request = {}) => requests.fresh({ v: 1, forced: true, ...request }),
      stop: () => shutdown.stop(),
    };
  } catch (error) {
    await shutdown.stop();
    throw error;
  }
}

if (import.meta.main) {
  await runService('checker', checkerConfigSchema, (config, logger) => startChecker(config, { logger }));
}
