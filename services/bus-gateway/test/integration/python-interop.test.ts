import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { RunningChecker } from '@aico-update/checker';
import { startTestChecker } from '@aico-update/checker/testing';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  freePort,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
} from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curveKeyPair } from 'zeromq';

/*
 * Interop with another language: a Python peer built like AICO's backend (Debian's python3-zmq and
 * python3-protobuf, message classes from our descriptor set) is the AICO broker the gateway connects
 * to, and an AICO frontend asking for an update check. Its bytes go into our parser, ours into its.
 */

const PYTHON = '/usr/bin/python3';
const peerScript = resolve(import.meta.dirname, '../interop/aico_peer.py');
const descriptors = resolve(import.meta.dirname, '../../../../libs/aico-bus/proto/aico.binpb');
const gatewayMain = resolve(import.meta.dirname, '../../src/main.ts');

let redis: SpawnedServer;
let nats: SpawnedServer;
let repo: TestRepository;
let checker: RunningChecker;
let gateway: ChildProcess | undefined;

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  repo = await startTestRepository();
  await repo.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  await repo.publish({ component: 'backend', version: '1.3.0', channel: 'stable' });
  checker = await startTestChecker(repo, redis, nats, { AICO_UPDATE_AUTO_DOWNLOAD: 'false' });
}, 60_000);

afterAll(async () => {
  gateway?.kill();
  await checker.stop();
  await repo.close();
  await Promise.all([redis.stop(), nats.stop()]);
});

describe('interop with a Python AICO peer', () => {
  it('a Python frontend checks for updates through a Python broker and gets our UpdateCheckResponse', async () => {
    const [pubPort, subPort] = [await freePort(), await freePort()];
    const python = spawn(
      PYTHON,
      [
        peerScript,
        '--descriptors',
        descriptors,
        '--pub-port',
        String(pubPort),
        '--sub-port',
        String(subPort),
        '--stay',
        '20',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    python.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const events: Record<string, unknown>[] = [];
    const lines = createInterface({ input: python.stdout });
    const exited = new Promise<number | null>((done) => python.on('close', done));
    const brokerReady = new Promise<void>((ready, failed) => {
      lines.on('line', (line) => {
        const event = JSON.parse(line) as Record<string, unknown>;
        events.push(event);
        if (event.event === 'broker_ready') ready();
      });
      python.on('close', () => failed(new Error(`the Python peer exited: ${stderr}`)));
    });
    await brokerReady;
    // The gateway as it is deployed: its own process.
    const httpPort = await freePort();
    gateway = spawn(process.execPath, [gatewayMain], {
      stdio: 'ignore',
      env: {
        PATH: process.env.PATH ?? '',
        AICO_BUS_ZEROMQ_HOST: '127.0.0.1',
        AICO_BUS_ZEROMQ_PUB_PORT: String(pubPort),
        AICO_BUS_ZEROMQ_SUB_PORT: String(subPort),
        AICO_BUS_TOPIC_STYLE: 'slashes_v1',
        AICO_REDIS_URL: redis.url,
        AICO_NATS_SERVERS: nats.url,
        AICO_HTTP_HOST: '127.0.0.1',
        AICO_HTTP_PORT: String(httpPort),
        // A configured token: the gateway writes no token file on this machine.
        AICO_CONTROL_TOKEN: 'test-control-token-0123456789',
      },
    });
    const deadline = Date.now() + 20_000;
    while (!events.some((e) => e.event !== 'broker_ready') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(events.at(-1), stderr).toEqual({
      event: 'answer',
      topic: 'update/check/response/v1',
      source: 'aico-update-gateway',
      message_type: 'update.check.response',
      update_available: true,
      latest_version: '1.3.0',
      update_id: 'backend-1.3.0',
    });
    // Its own round trip through the Python broker: ready.
    const ready = async () =>
      (await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined))?.status === 200;
    while (!(await ready()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(await ready()).toBe(true);
    python.kill();
    await exited;
  });

  it('a 64 MiB message from a Python peer does not grow the gateway broker, which keeps serving', async () => {
    gateway?.kill();
    const [pubPort, subPort, httpPort] = [await freePort(), await freePort(), await freePort()];
    const brokerPair = curveKeyPair();
    const senderPair = curveKeyPair();
    const broker = spawn(process.execPath, [gatewayMain], {
      stdio: 'ignore',
      env: {
        PATH: process.env.PATH ?? '',
        AICO_BUS_ZEROMQ_BIND_BROKER: 'true',
        AICO_BUS_ZEROMQ_BIND_HOST: '127.0.0.1',
        AICO_BUS_ZEROMQ_PUB_PORT: String(pubPort),
        AICO_BUS_ZEROMQ_SUB_PORT: String(subPort),
        AICO_BUS_ZEROMQ_HEARTBEAT_SECONDS: '0.3',
        AICO_REDIS_URL: redis.url,
        AICO_NATS_SERVERS: nats.url,
        AICO_HTTP_HOST: '127.0.0.1',
        AICO_HTTP_PORT: String(httpPort),
        AICO_CONTROL_TOKEN: 'test-control-token-0123456789',
        // Its key pair as an operator configures one, and the sender's key allowed: the frame must reach
        // the socket for the test to mean anything.
        AICO_BUS_ZEROMQ_SERVER_PUBLIC_KEY: brokerPair.publicKey,
        AICO_BUS_ZEROMQ_SERVER_SECRET_KEY: brokerPair.secretKey,
        AICO_BUS_ZEROMQ_CLIENT_KEYS: senderPair.publicKey,
        AICO_CONTROL_STATE_DIR: await makeTempDir('gateway-state'),
      },
    });
    gateway = broker;
    const ready = async () =>
      (await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined))?.status === 200;
    const deadline = Date.now() + 20_000;
    while (!(await ready()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(await ready()).toBe(true);
    const rss = async () => {
      const status = await readFile(`/proc/${broker.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
    };
    const before = await rss();
    // A peer as AICO's Python backend is built: CURVE with the broker's key, a 64 MiB second frame.
    const sender = spawn(PYTHON, [
      '-c',
      [
        'import sys, time, zmq',
        'ctx = zmq.Context()',
        'pub = ctx.socket(zmq.PUB)',
        'pub.curve_serverkey = sys.argv[2].encode()',
        'pub.curve_publickey, pub.curve_secretkey = sys.argv[3].encode(), sys.argv[4].encode()',
        'pub.connect(f"tcp://127.0.0.1:{sys.argv[1]}")',
        'time.sleep(0.5)',
        'pub.send_multipart([b"update.check.request", b"x" * (64 * 1024 * 1024)])',
        'time.sleep(2)',
        'print("sent", flush=True)',
      ].join('\n'),
      String(pubPort),
      brokerPair.publicKey,
      senderPair.publicKey,
      senderPair.secretKey,
    ]);
    let peak = before;
    const watching = setInterval(() => {
      void rss().then((now) => {
        peak = Math.max(peak, now);
      });
    }, 50);
    await new Promise((done) => sender.on('close', done));
    clearInterval(watching);
    // The frame is refused at the socket (ZMQ_MAXMSGSIZE), before it is buffered.
    expect(peak - before).toBeLessThan(24);
    expect(await ready()).toBe(true);
    broker.kill();
  });
});
