import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import {
  create,
  DownloadProgressSchema,
  type Envelope,
  InstallStatus,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateNotification_NotificationType,
  UpdateNotificationSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curveKeyPair } from 'zeromq';
import { gatewayConfigSchema } from '../../src/config.ts';
import { startGateway } from '../../src/main.ts';
import { ZmqPeer } from '../support/peer.ts';

/*
 * A frontend that speaks AICO's ZeroMQ bus updates the backend through the gateway: check, watch the
 * download, ask for the install, see it complete; with the real checker, downloader and installer, a real
 * TUF repository over HTTPS, and the real Docker Engine running the sample backend.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let repo: TestRepository;
let deployment: SampleDeployment;
let frontend: ZmqPeer;
const running: { stop(): Promise<unknown> }[] = [];
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  repo = await startTestRepository();
  deployment = await new SampleDeployment().start();
  await repo.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  const next = await deployment.image('1.1.0');
  const archive = join(await makeTempDir('e2e-image'), 'backend.tar');
  await docker('save', '-o', archive, next);
  await docker('rmi', '-f', next); // the installer must load it from the verified blobs
  await repo.repo.addRelease({
    component: 'backend',
    version: '1.1.0',
    channel: 'stable',
    notes: 'Remembers more',
    artifacts: [],
    images: [{ service: 'backend', archive }],
  });

  const [pubPort, subPort] = [await freePort(), await freePort()];
  const common = {
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_HOST: '127.0.0.1',
    AICO_HTTP_PORT: '0',
    // A configured token: the gateway writes no token file on this machine.
    AICO_CONTROL_TOKEN: 'test-control-token-0123456789',
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
      },
    }),
    { logger },
  );
  running.push(gateway);
  // The broker's own key pair, and a frontend key its allow-list names.
  frontend = new ZmqPeer('127.0.0.1', pubPort, subPort, gateway.brokerPublicKey, frontendKeys);
  await frontend.settle();
  running.push(await startTestDownloader(repo, redis, nats));
  running.push(
    await startInstaller(
      loadConfig(installerConfigSchema, {
        env: {
          ...common,
          AICO_INSTALLER_CACHE_DIR: join(repo.workDir, 'cache'),
          AICO_INSTALLER_STATE_DIR: join(repo.workDir, 'installer'),
          // Its own trust, from the publisher's root; metadata from the downloader's mirror in the cache.
          AICO_TUF_STATE_DIR: join(repo.workDir, 'installer', 'tuf'),
          AICO_TUF_TRUSTED_ROOT: repo.repo.trustedRootPath,
          AICO_INSTALLER_SERVICES: `backend=${deployment.name}`,
          AICO_INSTALLER_SOAK_SECONDS: '1',
          AICO_INSTALLER_PREPARE_TIMEOUT_SECONDS: '0.3',
        },
      }),
      { logger },
    ),
  );
  running.push(await startTestChecker(repo, redis, nats, { AICO_CHECKER_CHECK_ON_START: 'false' }));
}, 120_000);

afterAll(async () => {
  frontend?.close();
  for (const service of running.reverse()) await service.stop();
  await deployment?.remove();
  await repo?.close();
  await Promise.all([redis?.stop(), nats?.stop()]);
});

const on = (topic: string) => (m: { topic: string }) => m.topic === topic;

describe('an AICO frontend updates the backend through the bus', () => {
  it('checks, sees the download, asks for the install and sees it complete', async () => {
    const check = randomUUID();
    await frontend.send(
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema, {}),
      {
        correlation_id: check,
        reply_to: 'update.check.response',
      },
    );
    const checked = await frontend.answer(check, UpdateCheckResponseSchema, 30_000);
    expect(checked.payload).toMatchObject({ updateAvailable: true, forceUpdate: false });
    expect(checked.payload.updateInfo).toMatchObject({
      updateId: 'backend-1.1.0',
      changelog: 'Remembers more',
    });

    const available = await frontend.waitFor(on('update.available'), 30_000);
    expect(unpackPayload(available.envelope as Envelope, UpdateNotificationSchema).type).toBe(
      UpdateNotification_NotificationType.NOTIFICATION_AVAILABLE,
    );
    const complete = await frontend.waitFor(on('update.download.complete'), 60_000);
    expect(unpackPayload(complete.envelope as Envelope, UpdateNotificationSchema).message).toMatch(
      /waits for an install request/,
    );
    const progress = frontend.received
      .filter(on('update.download.progress'))
      .map((m) => unpackPayload(m.envelope as Envelope, DownloadProgressSchema));
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)?.progressPercent).toBe(100);
    expect(progress.at(-1)?.totalBytes).toBeGreaterThan(0n);

    const install = randomUUID();
    await frontend.send(
      'update.install.request',
      InstallUpdateRequestSchema,
      create(InstallUpdateRequestSchema, { updateId: 'backend-1.1.0', autoRestart: true }),
      { correlation_id: install, reply_to: 'update.install.response' },
    );
    const accepted = await frontend.answer(install, InstallUpdateResponseSchema);
    expect(accepted.payload, accepted.payload.message).toMatchObject({
      success: true,
      status: InstallStatus.INSTALL_PENDING,
    });

    await frontend.waitFor(on('update.restart.scheduled'), 30_000);
    const done = await frontend.waitFor(on('update.install.complete'), 90_000);
    const result = unpackPayload(done.envelope as Envelope, InstallUpdateResponseSchema);
    expect(result, result.message).toMatchObject({ success: true, status: InstallStatus.INSTALL_COMPLETED });
    expect(frontend.received.filter(on('update.install.progress')).length).toBeGreaterThan(3);
    expect(await deployment.version()).toBe('1.1.0');
  });
});
