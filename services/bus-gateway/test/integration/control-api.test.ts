import { join } from 'node:path';
import type { RunningChecker } from '@aico-update/checker';
import { startTestChecker } from '@aico-update/checker/testing';
import { installerConfigSchema, type RunningInstaller, startInstaller } from '@aico-update/installer';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { EventPublisher, ensureEventStream, loadConfig, StateKeys, Topics } from '@aico-update/shared';
import {
  freePort,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayConfigSchema } from '../../src/config.ts';
import { type RunningGateway, startGateway } from '../../src/main.ts';

/* The local control API with the real checker and installer behind it. */

let redis: SpawnedServer;
let nats: SpawnedServer;
let nc: NatsConnection;
let redisClient: Redis;
let repo: TestRepository;
let checker: RunningChecker;
let installer: RunningInstaller;
let gateway: RunningGateway;
let base: string;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
const TOKEN = 'let-me-in';

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  nc = await connect({ servers: nats.url });
  await ensureEventStream(nc);
  redisClient = new Redis(redis.url);
  repo = await startTestRepository();
  await repo.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  await repo.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
  checker = await startTestChecker(repo, redis, nats, { AICO_UPDATE_AUTO_DOWNLOAD: 'false' });
  const dir = await makeTempDir('control-api');
  const common = {
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_HOST: '127.0.0.1',
    AICO_HTTP_PORT: '0',
  };
  installer = await startInstaller(
    loadConfig(installerConfigSchema, {
      env: {
        ...common,
        AICO_INSTALLER_CACHE_DIR: join(dir, 'cache'),
        AICO_INSTALLER_STATE_DIR: join(dir, 'state'),
      },
    }),
    { logger },
  );
  gateway = await startGateway(
    loadConfig(gatewayConfigSchema, {
      env: {
        ...common,
        AICO_BUS_ZEROMQ_BIND_BROKER: 'true',
        AICO_BUS_ZEROMQ_BIND_HOST: '127.0.0.1',
        AICO_BUS_ZEROMQ_PUB_PORT: String(await freePort()),
        AICO_BUS_ZEROMQ_SUB_PORT: String(await freePort()),
        AICO_CONTROL_TOKEN: TOKEN,
      },
    }),
    { logger },
  );
  base = `http://127.0.0.1:${gateway.port}/api/v1`;
}, 60_000);

afterAll(async () => {
  await gateway.stop();
  await installer.stop();
  await checker.stop();
  await repo.close();
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

const auth = { authorization: `Bearer ${TOKEN}` };
const post = (path: string, body: unknown = {}) =>
  fetch(`${base}${path}`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('control API', () => {
  it('needs the token when one is configured', async () => {
    const response = await fetch(`${base}/status`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
  });

  it('checks, shows status and history, and refuses to install what is not downloaded', async () => {
    const check = await post('/check?forced=true');
    expect(check.status).toBe(200);
    expect(await check.json()).toMatchObject({ outcome: 'update_available' });

    const status = await (await fetch(`${base}/status`, { headers: auth })).json();
    expect(status).toMatchObject({
      installed: { backend: '1.0.0' },
      available: { backend: '1.1.0' },
      last_check: { outcome: 'update_available' },
      downloaded: [],
      bus: { mode: 'zeromq' },
    });

    const install = await post('/install', { component: 'backend' });
    expect(install.status).toBe(409);
    expect(await install.json()).toMatchObject({ accepted: false, code: 'NOT_DOWNLOADED' });
    const rollback = await post('/rollback', { component: 'backend' });
    expect(await rollback.json()).toMatchObject({ accepted: false, code: 'NOTHING_TO_ROLL_BACK' });
    const bad = await post('/install', { component: 'toaster' });
    expect(bad.status).toBe(400);

    await redisClient.lpush(
      StateKeys.installHistory,
      JSON.stringify({ version: '1.0.0', outcome: 'installed' }),
    );
    expect(await (await fetch(`${base}/history`, { headers: auth })).json()).toEqual({
      history: [{ version: '1.0.0', outcome: 'installed' }],
    });
  });

  it('streams update events as server-sent events', async () => {
    const controller = new AbortController();
    const response = await fetch(`${base}/events`, { headers: auth, signal: controller.signal });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // the opening comment: subscribed
    await new EventPublisher(nc).publish(Topics.downloadProgress, {
      v: 1,
      component: 'backend',
      version: '1.1.0',
      status: 'in_progress',
      bytes_done: 5,
      total_bytes: 10,
      percent: 50,
      rate_bytes_per_second: 1,
      eta_seconds: 5,
    });
    let text = '';
    while (!text.includes('\n\n')) text += new TextDecoder().decode((await reader.read()).value);
    controller.abort();
    expect(text).toMatch(/^event: update\.download\.progress\ndata: \{.*"percent":50.*\}\n\n/);
  });
});
