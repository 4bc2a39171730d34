import { randomUUID } from 'node:crypto';
import {
  create,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  PrepareForUpdateRequestSchema,
  PrepareForUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateNotification_NotificationType,
  UpdateNotificationSchema,
  UpdateStateSyncSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import type { RunningChecker } from '@aico-update/checker';
import { startTestChecker } from '@aico-update/checker/testing';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  EventPublisher,
  ExtraTopics,
  ensureEventStream,
  loadConfig,
  type PrepareAnswer,
  Streams,
  Subjects,
  Topics,
} from '@aico-update/shared';
import {
  freePort,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
  waitUntil,
} from '@aico-update/shared/testing';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { curveKeyPair } from 'zeromq';
import { AICO_BROKER_PUBLIC_KEY, AICO_BROKER_SECRET_KEY, gatewayConfigSchema } from '../../src/config.ts';
import { type RunningGateway, startGateway } from '../../src/main.ts';
import { ZeroMqBroker } from '../../src/transports/zeromq.ts';
import { ZmqPeer } from '../support/peer.ts';

/*
 * The gateway on real ZeroMQ sockets with CurveZMQ, AICO's default keys, a real checker against a real
 * TUF repository over HTTPS, real Redis and NATS. The peer is an AICO frontend as AICO's client is built.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let nc: NatsConnection;
let repo: TestRepository;
let checker: RunningChecker;
let pubPort: number;
let subPort: number;
const running: { stop(): Promise<unknown> }[] = [];
const peers: ZmqPeer[] = [];

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  nc = await connect({ servers: nats.url });
  await ensureEventStream(nc);
  repo = await startTestRepository();
  await repo.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  await repo.publish({ component: 'backend', version: '1.1.0', channel: 'stable', notes: 'Better recall' });
  checker = await startTestChecker(repo, redis, nats, { AICO_UPDATE_AUTO_DOWNLOAD: 'false' });
}, 60_000);

afterAll(async () => {
  await checker.stop();
  await repo.close();
  await nc.close();
  await Promise.all([redis.stop(), nats.stop()]);
});

beforeEach(async () => {
  pubPort = await freePort();
  subPort = await freePort();
});

afterEach(async () => {
  for (const peer of peers.splice(0)) peer.close();
  for (const service of running.splice(0).reverse()) await service.stop();
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.delete(Streams.events, 'bus-gateway').catch(() => undefined);
});

/** The frontends' key pairs the broker allows: one with full access, one that may only listen. */
const FRONTEND = curveKeyPair();
const DISPLAY = curveKeyPair();
let brokerKey = '';
let stateDir = '';

async function gateway(env: Record<string, string> = {}): Promise<RunningGateway> {
  stateDir ||= await makeTempDir('gateway-state');
  const config = loadConfig(gatewayConfigSchema, {
    env: {
      AICO_BUS_MODE: 'zeromq',
      AICO_BUS_ZEROMQ_HOST: '127.0.0.1',
      AICO_BUS_ZEROMQ_PUB_PORT: String(pubPort),
      AICO_BUS_ZEROMQ_SUB_PORT: String(subPort),
      AICO_BUS_ZEROMQ_BIND_BROKER: 'true',
      AICO_BUS_ZEROMQ_BIND_HOST: '127.0.0.1',
      AICO_BUS_ZEROMQ_HEARTBEAT_SECONDS: '0.2',
      AICO_REDIS_URL: redis.url,
      AICO_NATS_SERVERS: nats.url,
      AICO_HTTP_HOST: '127.0.0.1',
      AICO_HTTP_PORT: '0',
      // A configured token: the gateway writes no token file on this machine.
      AICO_CONTROL_TOKEN: 'test-control-token-0123456789',
      // Its broker key pair is made here on first start (AICO's published one is never used).
      AICO_CONTROL_STATE_DIR: stateDir,
      AICO_BUS_ZEROMQ_CLIENT_KEYS: FRONTEND.publicKey,
      AICO_BUS_ZEROMQ_READ_ONLY_CLIENT_KEYS: DISPLAY.publicKey,
      ...env,
    },
  });
  const started = await startGateway(config, {
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
  });
  running.push(started);
  brokerKey = started.brokerPublicKey;
  return started;
}

/** A frontend the broker's allow-list names (a fresh key pair with `keys: 'unknown'`). */
function peer(
  serverKey: string | undefined = brokerKey,
  keys: { publicKey: string; secretKey: string } = FRONTEND,
): ZmqPeer {
  const p = new ZmqPeer('127.0.0.1', pubPort, subPort, serverKey, keys);
  peers.push(p);
  return p;
}

async function metric(g: RunningGateway, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.port}/metrics`)).text();
  const match = text.split('\n').find((line) => pattern.test(line));
  if (!match) throw new Error(`no metric matches ${pattern}`);
  return Number(match.split(' ').pop());
}

describe('bus gateway on ZeroMQ with CurveZMQ', () => {
  it('answers an AICO frontend’s update.check.request in any spelling with an UpdateCheckResponse', async () => {
    const g = await gateway();
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const frontend = peer();
    await frontend.settle();
    for (const [topic, correlationId] of [
      ['update/check/request/v1', randomUUID()],
      ['update.check.request', randomUUID()],
    ] as const) {
      await frontend.send(
        topic,
        UpdateCheckRequestSchema,
        create(UpdateCheckRequestSchema, { deviceId: 'pc' }),
        {
          correlation_id: correlationId,
          reply_to: 'update/check/response/v1',
        },
      );
      const {
        topic: answeredOn,
        envelope,
        payload,
      } = await frontend.answer(correlationId, UpdateCheckResponseSchema);
      expect(answeredOn).toBe('update/check/response/v1');
      expect(envelope).toMatchObject({
        source: 'aico-update-gateway',
        version: '1.0',
        messageType: 'update.check.response',
      });
      expect(payload.updateAvailable).toBe(true);
      expect(payload.latestVersion?.version).toBe('1.1.0');
      expect(payload.updateInfo).toMatchObject({ updateId: 'backend-1.1.0', changelog: 'Better recall' });
      expect(payload.updateInfo?.targetVersion?.version).toBe('1.1.0');
    }
    const ready = await fetch(`http://127.0.0.1:${g.port}/readyz`);
    expect(ready.status).toBe(200);
    expect(await metric(g, /^aico_update_bus_connected[{ ]/)).toBe(1);
  });

  it('answers a burst of concurrent requests without losing one', async () => {
    const g = await gateway({ AICO_BUS_REQUESTS_PER_SECOND: '1000' });
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const frontend = peer();
    await frontend.settle();
    const ids = Array.from({ length: 60 }, () => randomUUID());
    await Promise.all(
      ids.map((id) =>
        frontend.send(
          'update.check.request',
          UpdateCheckRequestSchema,
          create(UpdateCheckRequestSchema, {}),
          {
            correlation_id: id,
          },
        ),
      ),
    );
    await waitUntil(
      () => ids.every((id) => frontend.received.some((m) => m.envelope?.attributes.correlation_id === id)),
      'every request to be answered',
      20_000,
    );
  });

  it('counts, logs and answers bad input, and keeps serving', async () => {
    const g = await gateway({ AICO_BUS_REQUESTS_PER_SECOND: '5' });
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const frontend = peer();
    await frontend.settle();
    const check = create(UpdateCheckRequestSchema, {});
    await frontend.sendFrames('update.check.request');
    await frontend.sendFrames('update.check.request', 'a', 'b');
    await frontend.sendFrames('update.check.request', new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]));
    await frontend.send('update.nonsense.request', UpdateCheckRequestSchema, check, { correlation_id: 'u1' });
    await frontend.send('update.check.request', UpdateCheckRequestSchema, check, {
      reply_to: 'update.check.response',
    });
    const wrongType = randomUUID();
    await frontend.send('update.install.request', UpdateCheckRequestSchema, check, {
      correlation_id: wrongType,
      reply_to: 'update.install.response',
    });
    // (A frame over bus.max_message_kib is refused by the socket itself, which drops the sender's
    // connection: python-interop.test.ts sends one from a peer of its own and watches the memory.)
    // A flood of install requests: answered (refused: nothing serves installs here, or rate limited), never blocking.
    const flood = Array.from({ length: 100 }, () => randomUUID());
    for (const id of flood) {
      await frontend.send(
        'update.install.request',
        InstallUpdateRequestSchema,
        create(InstallUpdateRequestSchema, {}),
        {
          correlation_id: id,
          reply_to: 'update.install.response',
        },
      );
    }

    const refused = await frontend.answer(wrongType, InstallUpdateResponseSchema);
    expect(refused.payload.success).toBe(false);
    expect(refused.payload.message).toMatch(/expected a aico\.core\.InstallUpdateRequest payload/);
    expect(refused.envelope.attributes.error_code).toBe('payload_type');
    await waitUntil(
      () => flood.every((id) => frontend.received.some((m) => m.envelope?.attributes.correlation_id === id)),
      'every flooded request to be answered',
    );
    const codes = flood.map(
      (id) =>
        frontend.received.find((m) => m.envelope?.attributes.correlation_id === id)?.envelope?.attributes
          .error_code,
    );
    expect(codes.filter((c) => c === 'RATE_LIMITED').length).toBeGreaterThan(50);
    expect(codes.filter((c) => c === 'NO_RESPONDER').length).toBeGreaterThan(0);
    // A request without a correlation id, with somewhere to answer, is told why.
    const noCorrelation = frontend.received.find(
      (m) => m.envelope?.attributes.error_code === 'no_correlation_id',
    );
    expect(noCorrelation?.topic).toBe('update.check.response');

    for (const reason of [
      'frames',
      'protobuf',
      'unknown_topic',
      'no_correlation_id',
      'payload_type',
      'rate_limited',
    ]) {
      expect(
        await metric(g, new RegExp(`^aico_update_bus_malformed_messages_total\\{reason="${reason}"`)),
        reason,
      ).toBeGreaterThan(0);
    }
    expect(await metric(g, /^aico_update_bus_malformed_messages_total\{reason="frames"/)).toBe(2);

    // Still serving.
    const after = randomUUID();
    await new Promise((r) => setTimeout(r, 1000));
    await frontend.send('update.check.request', UpdateCheckRequestSchema, check, { correlation_id: after });
    expect((await frontend.answer(after, UpdateCheckResponseSchema)).payload.latestVersion?.version).toBe(
      '1.1.0',
    );
    expect((await fetch(`http://127.0.0.1:${g.port}/readyz`)).status).toBe(200);
  });

  it('reports a wrong CURVE server key (readiness false, metric 0) instead of silence', async () => {
    const broker = new ZeroMqBroker({
      curve: true,
      secretKey: AICO_BROKER_SECRET_KEY,
      publicKey: AICO_BROKER_PUBLIC_KEY,
      maxMessageBytes: 1024 * 1024,
    });
    await broker.bind('127.0.0.1', pubPort, subPort);
    running.push({ stop: () => broker.close() });
    const g = await gateway({
      AICO_BUS_ZEROMQ_BIND_BROKER: 'false',
      AICO_BUS_ZEROMQ_SERVER_PUBLIC_KEY: 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7',
    });
    await new Promise((r) => setTimeout(r, 1500));
    expect(g.bus.connected()).toBe(false);
    const ready = await fetch(`http://127.0.0.1:${g.port}/readyz`);
    expect(ready.status).toBe(503);
    // Open to anyone: which check fails, not where or why (that is in the log and the control API).
    expect(await ready.json()).toEqual({
      status: 'not ready',
      checks: expect.arrayContaining([{ name: 'aico-bus', ok: false }]),
    });
    expect(g.bus.problem()).toMatch(/CURVE public key is not bus\.zeromq\.server_public_key/);
    expect(await metric(g, /^aico_update_bus_connected[{ ]/)).toBe(0);
  });

  it('publishes update events on the bus, and replays the ones it missed after a restart, once', async () => {
    // AICO's broker stays up while the gateway restarts.
    const broker = new ZeroMqBroker({
      curve: true,
      secretKey: AICO_BROKER_SECRET_KEY,
      publicKey: AICO_BROKER_PUBLIC_KEY,
      maxMessageBytes: 1024 * 1024,
    });
    await broker.bind('127.0.0.1', pubPort, subPort);
    const external = { AICO_BUS_ZEROMQ_BIND_BROKER: 'false' };
    const frontend = peer(AICO_BROKER_PUBLIC_KEY);
    let g = await gateway(external);
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    await frontend.settle();
    const events = new EventPublisher(nc);
    const release = {
      component: 'backend' as const,
      version: '1.1.0',
      channel: 'stable' as const,
      critical: true,
      notes: 'Fixes',
      released_at: '2026-11-27T00:00:00Z',
      size_bytes: 10,
      target: { path: 'releases/backend/1.1.0.json', length: 1, sha256: 'a'.repeat(64) },
    };
    await events.publish(Topics.available, {
      v: 1,
      release,
      installed: '1.0.0',
      detected_at: new Date().toISOString(),
    });
    const available = await frontend.waitFor((m) => m.topic === 'update.available');
    const notification = unpackPayload(available.envelope as never, UpdateNotificationSchema);
    expect(notification).toMatchObject({
      type: UpdateNotification_NotificationType.NOTIFICATION_AVAILABLE,
      updateId: 'backend-1.1.0',
      isCritical: true,
    });

    await g.stop();
    running.splice(running.indexOf(g), 1);
    await events.publish(Topics.restartRequired, {
      v: 1,
      component: 'backend',
      version: '1.1.0',
      services: ['backend'],
      message: 'restart to apply',
    });
    await events.publish(Topics.installComplete, {
      v: 1,
      release,
      success: true,
      outcome: 'installed',
      duration_ms: 5,
    });
    g = await gateway(external);
    await frontend.waitFor((m) => m.topic === 'update.install.complete', 15_000);
    await new Promise((r) => setTimeout(r, 1000));
    const replayed = frontend.received.filter((m) => m.topic !== 'update.available');
    expect(replayed.map((m) => m.topic)).toEqual(['update.restart.required', 'update.install.complete']);
    expect(unpackPayload(replayed[0]?.envelope as never, UpdateNotificationSchema).type).toBe(
      UpdateNotification_NotificationType.NOTIFICATION_RESTART_REQUIRED,
    );
    expect(frontend.received.filter((m) => m.topic === 'update.available')).toHaveLength(1);
    await g.stop();
    running.splice(running.indexOf(g), 1);
    await broker.close();
  });

  it('asks AICO components to prepare and passes their answers to the installer', async () => {
    const g = await gateway();
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const component = peer();
    await component.settle();
    const asked = (async () => {
      const request = await component.waitFor((m) => m.topic === ExtraTopics.installPrepare);
      const payload = unpackPayload(request.envelope as never, PrepareForUpdateRequestSchema);
      expect(payload.updateId).toBe('backend-1.1.0');
      await component.send(
        request.envelope?.attributes.reply_to ?? '',
        PrepareForUpdateResponseSchema,
        create(PrepareForUpdateResponseSchema, {
          ready: false,
          suggestedDelaySeconds: 30,
          blockingOperations: ['answering a message'],
        }),
        { correlation_id: request.envelope?.attributes.correlation_id ?? '' },
      );
    })();
    const replies = await nc.requestMany(
      Subjects.command(ExtraTopics.installPrepare),
      JSON.stringify({
        v: 1,
        update_id: 'backend-1.1.0',
        component: 'backend',
        version: '1.1.0',
        services: ['backend'],
        estimated_downtime_seconds: 5,
      }),
      { strategy: 'timer', maxWait: 1500 },
    );
    const answers: PrepareAnswer[] = [];
    for await (const reply of replies) answers.push(reply.json());
    await asked;
    expect(answers).toEqual([
      expect.objectContaining({
        ready: false,
        suggested_delay_seconds: 30,
        blocking_operations: ['answering a message'],
      }),
    ]);
  });

  it('answers update.state.sync with the component’s state', async () => {
    const g = await gateway();
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const frontend = peer();
    await frontend.settle();
    const id = randomUUID();
    await frontend.send('update.state.sync', UpdateStateSyncSchema, create(UpdateStateSyncSchema, {}), {
      correlation_id: id,
    });
    const { topic, payload } = await frontend.answer(id, UpdateStateSyncSchema);
    expect(topic).toBe('update.state.sync.response');
    expect(payload.currentVersion?.version).toBe('1.0.0');
  });
});

describe('the broker authenticates its peers', () => {
  const checkFrom = async (frontend: ZmqPeer) => {
    const id = randomUUID();
    await frontend.send(
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema, {}),
      {
        correlation_id: id,
      },
    );
    return id;
  };
  const answered = (frontend: ZmqPeer, id: string) =>
    frontend.received.some((m) => m.envelope?.attributes.correlation_id === id);

  it('a peer with an unknown key gets no answer and installs nothing; an allowed one is answered', async () => {
    const g = await gateway();
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const installs: string[] = [];
    const sub = nc.subscribe(Subjects.command(Topics.installRequest), {
      callback: (_e, m) => void installs.push(m.string()),
    });
    const strangerKeys = curveKeyPair();
    const stranger = peer(brokerKey, strangerKeys);
    const friend = peer();
    await friend.settle();
    const request = create(InstallUpdateRequestSchema, { updateId: 'backend-1.1.0', autoRestart: true });
    const strangerInstall = randomUUID();
    await stranger.send('update.install.request', InstallUpdateRequestSchema, request, {
      correlation_id: strangerInstall,
    });
    const strangerCheck = await checkFrom(stranger);
    const friendCheck = await checkFrom(friend);
    await waitUntil(() => answered(friend, friendCheck), 'the allowed frontend to be answered');
    await new Promise((r) => setTimeout(r, 500));
    expect(answered(stranger, strangerCheck)).toBe(false);
    expect(answered(stranger, strangerInstall)).toBe(false);
    expect(stranger.received).toEqual([]);
    expect(installs).toEqual([]);
    sub.unsubscribe();
    // The operator sees the refused key, to allow it if it is a frontend of theirs.
    const status = await fetch(`http://127.0.0.1:${g.port}/api/v1/status`, {
      headers: { authorization: 'Bearer test-control-token-0123456789' },
    });
    const body = (await status.json()) as { bus: { refused_client_keys: { key: string }[] } };
    expect(body.bus.refused_client_keys).toEqual(
      expect.arrayContaining([expect.objectContaining({ key: strangerKeys.publicKey })]),
    );
    expect(await metric(g, /^aico_update_bus_malformed_messages_total\{reason="client_key"/)).toBeGreaterThan(
      0,
    );
  });

  it('a read-only key receives events but cannot ask for anything', async () => {
    const g = await gateway();
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const display = peer(brokerKey, DISPLAY);
    await display.settle();
    const asked = await checkFrom(display);
    await new EventPublisher(nc).publish(Topics.available, {
      v: 1,
      release: {
        component: 'backend',
        version: '1.1.0',
        channel: 'stable',
        critical: false,
        notes: '',
        released_at: '2026-12-01T00:00:00Z',
        size_bytes: 1,
        target: { path: 'releases/backend/1.1.0.json', length: 1, sha256: 'a'.repeat(64) },
      },
      installed: '1.0.0',
      detected_at: '2026-12-01T00:00:00Z',
    });
    await waitUntil(() => display.received.some((m) => m.topic === 'update.available'), 'the event');
    await new Promise((r) => setTimeout(r, 500));
    expect(answered(display, asked)).toBe(false);
  });

  it("uses its own key pair, never AICO's published one: a peer trusting that key reaches nothing", async () => {
    const g = await gateway();
    expect(g.brokerPublicKey).not.toBe(AICO_BROKER_PUBLIC_KEY);
    await waitUntil(() => g.bus.connected(), 'the bus to connect');
    const fooled = peer(AICO_BROKER_PUBLIC_KEY);
    await fooled.settle();
    const asked = await checkFrom(fooled);
    await new Promise((r) => setTimeout(r, 800));
    expect(answered(fooled, asked)).toBe(false);
    // Kept across restarts: frontends configured with it keep working.
    await running.pop()?.stop();
    expect((await gateway()).brokerPublicKey).toBe(g.brokerPublicKey);
  });
});
