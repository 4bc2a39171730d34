import { join } from 'node:path';
import { startTestChecker } from '@aico-update/checker/testing';
import { startTestDownloader } from '@aico-update/downloader/testing';
import { installerConfigSchema, startInstaller } from '@aico-update/installer';
import { SampleDeployment } from '@aico-update/installer/testing';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { loadConfig } from '@aico-update/shared';
import {
  docker,
  freePort,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
} from '@aico-update/shared/testing';
import { pino } from 'pino';
import { curveKeyPair } from 'zeromq';
import { gatewayConfigSchema } from '../../src/config.ts';
import { startGateway } from '../../src/main.ts';
import { ZmqPeer } from './peer.ts';

/*
 * The whole update system in one process for tests from the bus: the real checker, downloader, installer
 * and gateway (the ZeroMQ broker), a real TUF repository over HTTPS, real Redis and NATS, and the sample
 * backend on the real Docker Engine at 1.0.0. A frontend peer with an allow-listed key talks to the bus.
 */

export const CONTROL_TOKEN = 'test-control-token-0123456789';

export interface BusStack {
  redis: SpawnedServer;
  nats: SpawnedServer;
  repo: TestRepository;
  deployment: SampleDeployment;
  frontend: ZmqPeer;
  /** The control API's base URL and the headers it needs. */
  api: string;
  headers: Record<string, string>;
  /** Where the installer keeps its state and backups. */
  installerDir: string;
  /** Publishes a backend release whose image is the sample backend at `version`. */
  publishBackend(
    version: string,
    options?: {
      behaviour?: 'healthy' | 'unhealthy';
      critical?: boolean;
      notes?: string;
      frontendApis?: string[];
    },
  ): Promise<void>;
  stop(): Promise<void>;
}

export async function startBusStack(
  options: { installerEnv?: Record<string, string>; downloaderEnv?: Record<string, string> } = {},
): Promise<BusStack> {
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const running: { stop(): Promise<unknown> }[] = [];
  const [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  const repo = await startTestRepository();
  const deployment = await new SampleDeployment().start();
  let frontend: ZmqPeer | undefined;
  const stop = async () => {
    frontend?.close();
    for (const service of running.reverse()) await service.stop();
    await deployment.remove();
    await repo.close();
    await Promise.all([redis.stop(), nats.stop()]);
  };
  try {
    await repo.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
    const [pubPort, subPort] = [await freePort(), await freePort()];
    const common = {
      AICO_REDIS_URL: redis.url,
      AICO_NATS_SERVERS: nats.url,
      AICO_HTTP_HOST: '127.0.0.1',
      AICO_HTTP_PORT: '0',
      // A configured token: the gateway writes no token file on this machine.
      AICO_CONTROL_TOKEN: CONTROL_TOKEN,
    };
    // The gateway first: its durable consumer takes every event from here on.
    const frontendKeys = curveKeyPair();
    const gateway = await startGateway(
      loadConfig(gatewayConfigSchema, {
        env: {
          ...common,
          AICO_BUS_ZEROMQ_BIND_BROKER: 'true',
          AICO_BUS_ZEROMQ_BIND_HOST: '127.0.0.1',
          AICO_BUS_ZEROMQ_HOST: '127.0.0.1',
          AICO_BUS_ZEROMQ_PUB_PORT: String(pubPort),
          AICO_BUS_ZEROMQ_SUB_PORT: String(subPort),
          AICO_BUS_ZEROMQ_HEARTBEAT_SECONDS: '0.2',
          AICO_BUS_ZEROMQ_CLIENT_KEYS: frontendKeys.publicKey,
          AICO_CONTROL_STATE_DIR: join(repo.workDir, 'gateway'),
          // The downloader's cache: packages and the TUF metadata mirror are served from it.
          AICO_PACKAGES_CACHE_DIR: join(repo.workDir, 'cache'),
        },
      }),
      { logger },
    );
    running.push(gateway);
    // The broker's own key pair, and a frontend key its allow-list names.
    frontend = new ZmqPeer('127.0.0.1', pubPort, subPort, gateway.brokerPublicKey, frontendKeys);
    await frontend.settle();
    running.push(await startTestDownloader(repo, redis, nats, options.downloaderEnv));
    const installerDir = join(repo.workDir, 'installer');
    running.push(
      await startInstaller(
        loadConfig(installerConfigSchema, {
          env: {
            ...common,
            AICO_INSTALLER_CACHE_DIR: join(repo.workDir, 'cache'),
            AICO_INSTALLER_STATE_DIR: installerDir,
            // Its own trust, from the publisher's root; metadata from the downloader's mirror in the cache.
            AICO_TUF_STATE_DIR: join(installerDir, 'tuf'),
            AICO_TUF_TRUSTED_ROOT: repo.repo.trustedRootPath,
            AICO_INSTALLER_SERVICES: `backend=${deployment.name}`,
            AICO_INSTALLER_BACKUP_DIR: join(installerDir, 'backups'),
            AICO_INSTALLER_SOAK_SECONDS: '1',
            AICO_INSTALLER_HEALTH_TIMEOUT_SECONDS: '15',
            AICO_INSTALLER_PREPARE_TIMEOUT_SECONDS: '0.3',
            ...options.installerEnv,
          },
        }),
        { logger },
      ),
    );
    running.push(await startTestChecker(repo, redis, nats, { AICO_CHECKER_CHECK_ON_START: 'false' }));
    return {
      redis,
      nats,
      repo,
      deployment,
      frontend,
      api: `http://127.0.0.1:${gateway.port}/api/v1`,
      headers: { authorization: `Bearer ${CONTROL_TOKEN}`, 'content-type': 'application/json' },
      installerDir,
      async publishBackend(
        version,
        { behaviour = 'healthy', critical = false, notes = '', frontendApis } = {},
      ) {
        const tag = await deployment.image(version, behaviour);
        const archive = join(await makeTempDir('stack-image'), 'backend.tar');
        await docker('save', '-o', archive, tag);
        await docker('rmi', '-f', tag); // the installer must load it from the verified blobs
        await repo.repo.addRelease({
          component: 'backend',
          version,
          channel: 'stable',
          critical,
          notes,
          artifacts: [],
          frontendApis,
          images: [{ service: 'backend', archive }],
          zstdLevel: 3, // chunked, at a fast level: these tests are not about bytes
        });
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
