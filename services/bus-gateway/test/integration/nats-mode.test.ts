import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ComponentType,
  create,
  decodeEnvelope,
  encodeEnvelope,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateNotificationSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import type { RunningChecker } from '@aico-update/checker';
import { startTestChecker } from '@aico-update/checker/testing';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { EventPublisher, ensureEventStream, loadConfig, Topics } from '@aico-update/shared';
import { type SpawnedServer, spawnNats, spawnRedis, waitUntil } from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayConfigSchema } from '../../src/config.ts';
import { type RunningGateway, startGateway } from '../../src/main.ts';

/*
 * The NATS generation: AICO's own NATS server (a second one here, as when AICO and the update system
 * run their own), subjects `aico.<tenant>.update.…`, requests over inboxes, the same envelope.
 */

let redis: SpawnedServer;
let internal: SpawnedServer;
let aico: SpawnedServer;
let aicoNc: NatsConnection;
let repo: TestRepository;
let checker: RunningChecker;
let gateway: RunningGateway;
const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

beforeAll(async () => {
  [redis, internal, aico] = await Promise.all([spawnRedis(), spawnNats(), spawnNats()]);
  repo = await startTestRepository();
  await repo.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  await repo.publish({ component: 'backend', version: '1.2.0', channel: 'stable' });
  const linux = join(repo.workDir, 'aico-1.1.0-linux.AppImage');
  await writeFile(linux, 'a frontend for linux');
  await repo.repo.addRelease({
    component: 'frontend',
    version: '1.1.0',
    channel: 'stable',
    notes: '',
    artifacts: [],
    packages: [{ platform: 'linux', file: linux }],
    needsBackend: '>=1.0.0',
  });
  checker = await startTestChecker(repo, redis, internal, { AICO_UPDATE_AUTO_DOWNLOAD: 'false' });
  const config = loadConfig(gatewayConfigSchema, {
    env: {
      AICO_BUS_MODE: 'nats',
      AICO_BUS_NATS_SERVERS: aico.url,
      AICO_BUS_NATS_TENANT: 'home',
      AICO_REDIS_URL: redis.url,
      AICO_NATS_SERVERS: internal.url,
      AICO_HTTP_HOST: '127.0.0.1',
      AICO_HTTP_PORT: '0',
      // A configured token: the gateway writes no token file on this machine.
      AICO_CONTROL_TOKEN: 'test-control-token-0123456789',
    },
  });
  gateway = await startGateway(config, { logger });
  aicoNc = await connect({ servers: aico.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
}, 60_000);

afterAll(async () => {
  await gateway.stop();
  await checker.stop();
  await repo.close();
  await aicoNc.close();
  await Promise.all([redis.stop(), internal.stop(), aico.stop()]);
});

describe('bus gateway on NATS (AICO since 2026)', () => {
  it('answers a check request through the inbox, with the attributes AICO’s contract requires', async () => {
    const request = encodeEnvelope(
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema, {}),
      { source: 'frontend', attributes: { correlation_id: 'c-nats' } },
    );
    const reply = await aicoNc.request('aico.home.update.check.request', request, { timeout: 15_000 });
    const envelope = decodeEnvelope(reply.data);
    expect(envelope.attributes).toMatchObject({
      correlation_id: 'c-nats',
      tenant_id: 'home',
      user_id: 'system',
      request_id: 'c-nats',
    });
    expect(envelope.attributes.idempotency_key).toMatch(/^[0-9a-f-]{36}$/);
    const payload = unpackPayload(envelope, UpdateCheckResponseSchema);
    expect(payload).toMatchObject({ updateAvailable: true });
    expect(payload.latestVersion?.version).toBe('1.2.0');
  });

  it('a frontend device over NATS is registered and answered for its platform', async () => {
    const request = encodeEnvelope(
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema, {
        componentType: ComponentType.COMPONENT_FRONTEND,
        deviceId: 'laptop-7',
        currentVersion: { version: '1.0.0' },
        systemInfo: { platform: 'linux' },
      }),
      { source: 'frontend', attributes: { correlation_id: 'c-device' } },
    );
    const reply = await aicoNc.request('aico.home.update.check.request', request, { timeout: 15_000 });
    const envelope = decodeEnvelope(reply.data);
    expect(envelope.attributes).toMatchObject({
      correlation_id: 'c-device',
      device_answer: 'update',
      package_target: 'artifacts/frontend/1.1.0/aico-1.1.0-linux.AppImage',
    });
    expect(unpackPayload(envelope, UpdateCheckResponseSchema).updateInfo?.updateId).toBe('frontend-1.1.0');
    const devices = await fetch(`http://127.0.0.1:${gateway.port}/api/v1/devices`, {
      headers: { authorization: 'Bearer test-control-token-0123456789' },
    });
    expect(await devices.json()).toMatchObject({
      devices: [{ id: 'laptop-7', platform: 'linux', version: '1.0.0', via: 'nats' }],
    });
  });

  it('answers an install request that nothing can serve with a clear refusal, not silence', async () => {
    const request = encodeEnvelope(
      'update.install.request',
      InstallUpdateRequestSchema,
      create(InstallUpdateRequestSchema, { updateId: 'backend-1.2.0', autoRestart: true }),
      { source: 'frontend', attributes: { correlation_id: 'i-nats' } },
    );
    const reply = await aicoNc.request('aico.home.update.install.request', request, { timeout: 15_000 });
    const envelope = decodeEnvelope(reply.data);
    expect(envelope.attributes.error_code).toBe('NO_RESPONDER');
    expect(unpackPayload(envelope, InstallUpdateResponseSchema)).toMatchObject({ success: false });
  });

  it('loses no durable event when the internal NATS restarts', async () => {
    const seen: string[] = [];
    aicoNc.subscribe('aico.home.update.restart.required', {
      callback: (_e, m) =>
        void seen.push(unpackPayload(decodeEnvelope(m.data), UpdateNotificationSchema).message),
    });
    await aicoNc.flush();
    const nc = await connect({ servers: internal.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    await ensureEventStream(nc);
    const events = new EventPublisher(nc);
    const restart = (message: string) =>
      events.publish(Topics.restartRequired, {
        v: 1,
        component: 'backend',
        version: '1.2.0',
        services: [],
        message,
      });
    await restart('before');
    await waitUntil(() => seen.includes('before'), 'the first event');
    await internal.restart();
    await waitUntil(() => !nc.isClosed() && nc.info !== undefined, 'reconnect');
    await waitUntil(
      async () => {
        try {
          await restart('after');
          return true;
        } catch {
          return false;
        }
      },
      'publishing after the restart',
      20_000,
    );
    await waitUntil(() => seen.includes('after'), 'the event published after the restart', 20_000);
    expect(seen.filter((m) => m === 'before')).toHaveLength(1);
    await nc.close();
    const ready = await fetch(`http://127.0.0.1:${gateway.port}/readyz`);
    expect(ready.status).toBe(200);
  }, 60_000);
});
