import { join } from 'node:path';
import {
  type CheckRequest,
  type CheckResponse,
  connectNats,
  connectRedis,
  createLogger,
  createMetricsRegistry,
  createServiceApp,
  EventPublisher,
  ensureEventStream,
  type Logger,
  listen,
  runService,
  Shutdown,
  targetsUrlOf,
} from '@aico-update/shared';
import { TufClient, TufFetcher } from '@aico-update/tuf-client';
import { BullDownloadQueue, CheckQueue } from './adapters/bullmq-queues.ts';
import { serveCheckRequests } from './adapters/nats-check-requests.ts';
import { RedisCheckState } from './adapters/redis-state.ts';
import { TufReleaseSource } from './adapters/tuf-release-source.ts';
import { type CheckerConfig, checkerConfigSchema } from './config.ts';
import { CheckRequests } from './handlers/check-requests.ts';
import { type CheckDeps, runCheck } from './handlers/run-check.ts';
import { statusRoutes } from './http/status-routes.ts';
import { createCheckerMetrics } from './metrics.ts';

export interface RunningChecker {
  port: number;
  /** Runs a check now, as a forced request would (tests and the demo). */
  checkNow(request?: Partial<CheckRequest>): Promise<CheckResponse>;
  stop(): Promise<boolean>;
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
    const redis = await connectRedis(config.redis.url, logger);
    shutdown.add('redis', () => redis.quit());

    const nc = await connectNats(config.nats.servers, 'aico-update-checker', logger);
    shutdown.add('nats', () => nc.drain());
    await ensureEventStream(nc);

    const state = new RedisCheckState(redis);
    await state.seedInstalled(config.installed);

    const fetcher = new TufFetcher({
      caFile: config.update_server.ca_file,
      proxy: config.update_server.proxy,
      idleTimeoutMs: config.update_server.idle_timeout_seconds * 1000,
      connectTimeoutMs: config.update_server.connect_timeout_seconds * 1000,
      retries: config.update_server.retries,
      tmpDir: join(config.tuf.state_dir, 'tmp'),
      userAgent: 'aico-update-checker',
    });
    shutdown.add('fetcher', () => fetcher.close());
    const client = new TufClient({
      metadataDir: join(config.tuf.state_dir, 'metadata'),
      workDir: config.tuf.state_dir,
      trustedRootFile: config.tuf.trusted_root,
      metadataUrl: config.update_server.metadata_url,
      targetsUrl: targetsUrlOf(config.update_server),
      targetsDir: join(config.tuf.state_dir, 'targets'),
      fetcher,
      logger,
    });

    const downloads = new BullDownloadQueue(redis);
    shutdown.add('download queue', () => downloads.close());
    const deps: CheckDeps = {
      policy: config.update,
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
      await checks.schedule(config.update.check_interval);
      if (config.checker.check_on_start) await checks.checkSoon();
    }

    const subscription = serveCheckRequests(nc, requests, metrics, logger);
    shutdown.add('check requests', () => subscription.drain());
    // Started means answering: make sure the server has the subscription before saying so.
    await nc.flush();

    const app = createServiceApp({
      registry,
      logger,
      readiness: [
        { name: 'redis', check: async () => void (await redis.ping()) },
        { name: 'nats', check: async () => void (await nc.flush()) },
      ],
      routes: statusRoutes({ state, client, requests }),
    });
    const http = await listen(app, config.http.host, config.http.port);
    shutdown.add('http', () => http.close());
    logger.info(
      {
        port: http.port,
        channel: config.update.channel,
        check_interval_hours: config.update.check_interval,
        metadata_url: config.update_server.metadata_url,
      },
      'checker started',
    );
    return {
      port: http.port,
      checkNow: (request = {}) => requests.handle({ v: 1, forced: true, ...request }),
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
