/*
 * npm run bench:bus — the bus gateway bridging ZeroMQ → NATS and back, against a bare forwarder in the
 * same run. An AICO peer sends `update.check.request` (AicoMessage, CurveZMQ) through a broker; the
 * gateway validates it, asks the internal NATS command subject and answers with an UpdateCheckResponse.
 * The bare forwarder passes the same bytes to a NATS request and the reply back, doing nothing else.
 * Both NATS responders answer at once (the checker's own work is not what is measured here). The
 * gateway and the forwarder run in processes of their own, as deployed; the peer, the broker and the
 * responders share this one, which runs with the same GC settings as the gateway (package.json): its own
 * collections would otherwise add to both paths' tails.
 *   bridge_vs_bare   throughput (32 requests in flight) of the gateway over the bare forwarder's
 *   bridge_p50_ms    round-trip latency through the gateway at 1,000 requests per second (10 s)
 *   bridge_p99_ms
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import { create, decodeEnvelope, encodeEnvelope, UpdateCheckRequestSchema } from '@aico-update/aico-bus';
import {
  AICO_BROKER_PUBLIC_KEY,
  AICO_BROKER_SECRET_KEY,
  SerialSender,
  ZeroMqBroker,
} from '@aico-update/bus-gateway';
import { type CheckResponse, Subjects, Topics } from '@aico-update/shared';
import { freePort, makeTempDir, spawnNats, spawnRedis } from '@aico-update/shared/testing';
import { connect } from '@nats-io/transport-node';
import { curveKeyPair, Publisher, Subscriber } from 'zeromq';
import { compileWorkspace, composeNodeFlags } from './support/compiled.ts';

const [redisServer, natsServer] = await Promise.all([spawnRedis(), spawnNats()]);
const [pubPort, subPort] = [await freePort(), await freePort()];
const broker = new ZeroMqBroker({
  curve: true,
  secretKey: AICO_BROKER_SECRET_KEY,
  publicKey: AICO_BROKER_PUBLIC_KEY,
  maxMessageBytes: 1024 * 1024,
});
await broker.bind('127.0.0.1', pubPort, subPort);
const nc = await connect({ servers: natsServer.url });

// The internal side: an immediate check answer, and an echo for the bare forwarder.
const answer: CheckResponse = {
  v: 1,
  check_id: 'bench',
  reason: 'request',
  forced: false,
  channel: 'stable',
  checked_at: new Date().toISOString(),
  duration_ms: 0,
  outcome: 'up_to_date',
  components: [{ component: 'backend', installed: '1.0.0' }],
  cached: true,
};
const answerJson = JSON.stringify(answer);
nc.subscribe(Subjects.command(Topics.checkRequest), { callback: (_e, m) => void m.respond(answerJson) });
nc.subscribe('bench.bare', { callback: (_e, m) => void m.respond(m.data) });

// The gateway and the bare forwarder, each in its own process, as deployed: compiled JavaScript, with
// the gateway's Node flags from docker-compose.yml.
const compiled = await compileWorkspace(join(await makeTempDir('bus-bench'), 'compiled'));
const httpPort = await freePort();
const gateway = spawn(
  process.execPath,
  [...(await composeNodeFlags('bus-gateway')), join(compiled.dir, 'services/bus-gateway/src/main.js')],
  {
    stdio: 'ignore',
    env: {
      PATH: process.env.PATH ?? '',
      AICO_BUS_ZEROMQ_HOST: '127.0.0.1',
      AICO_BUS_ZEROMQ_PUB_PORT: String(pubPort),
      AICO_BUS_ZEROMQ_SUB_PORT: String(subPort),
      AICO_BUS_ZEROMQ_HEARTBEAT_SECONDS: '0.5',
      AICO_BUS_REQUESTS_PER_SECOND: '10000',
      AICO_REDIS_URL: redisServer.url,
      AICO_NATS_SERVERS: natsServer.url,
      AICO_HTTP_HOST: '127.0.0.1',
      AICO_HTTP_PORT: String(httpPort),
      // A configured token: the gateway writes no token file on this machine.
      AICO_CONTROL_TOKEN: 'test-control-token-0123456789',
      AICO_LOG_LEVEL: 'error',
    },
  },
);
const bare = spawn(
  process.execPath,
  [
    await compiled.addScript(resolve(import.meta.dirname, 'support/bare-forwarder.ts')),
    '127.0.0.1',
    String(pubPort),
    String(subPort),
    natsServer.url,
    AICO_BROKER_PUBLIC_KEY,
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
await new Promise((ready) => bare.stdout?.once('data', ready));
const curve = () => {
  const keys = curveKeyPair();
  return {
    curveServerKey: AICO_BROKER_PUBLIC_KEY,
    curvePublicKey: keys.publicKey,
    curveSecretKey: keys.secretKey,
  };
};

// The AICO peer.
const peerOut = new Publisher({ linger: 0, ...curve() });
const peerIn = new Subscriber({ linger: 0, ...curve() });
peerOut.connect(`tcp://127.0.0.1:${pubPort}`);
peerIn.connect(`tcp://127.0.0.1:${subPort}`);
peerIn.subscribe('update.check.response');
peerIn.subscribe('bench.bare.response');
const pending = new Map<string, () => void>();
void (async () => {
  for await (const [, data] of peerIn) {
    const id = decodeEnvelope(data as Uint8Array).attributes.correlation_id ?? '';
    pending.get(id)?.();
    pending.delete(id);
  }
})();
const peerSender = new SerialSender(peerOut);

type Path = 'bridge' | 'bare';
const request = create(UpdateCheckRequestSchema, { deviceId: 'bench' });
function roundTrip(path: Path): Promise<number> {
  const id = randomUUID();
  const topic = path === 'bridge' ? 'update.check.request' : 'bench.bare.request';
  const bytes = encodeEnvelope(topic, UpdateCheckRequestSchema, request, {
    source: 'bench-peer',
    attributes: { correlation_id: id, reply_to: 'update.check.response' },
  });
  const started = performance.now();
  return new Promise((done) => {
    pending.set(id, () => done(performance.now() - started));
    void peerSender.send([topic, bytes]);
  });
}

async function throughput(path: Path, total: number, window: number): Promise<number> {
  const started = performance.now();
  let sent = 0;
  const lane = async () => {
    while (sent < total) {
      sent += 1;
      await roundTrip(path);
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  return total / ((performance.now() - started) / 1000);
}

async function paced(path: Path, perSecond: number, seconds: number): Promise<number[]> {
  const latencies: Promise<number>[] = [];
  const start = performance.now();
  for (let i = 0; i < perSecond * seconds; i++) {
    const due = start + (i * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    latencies.push(roundTrip(path));
  }
  return (await Promise.all(latencies)).sort((a, b) => a - b);
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;

const gatewayReady = async () =>
  (await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined))?.status === 200;
while (!(await gatewayReady())) await new Promise((r) => setTimeout(r, 100));
await new Promise((r) => setTimeout(r, 500)); // subscriptions travel
// Warm-up, then each measurement.
await throughput('bridge', 500, 16);
await throughput('bare', 500, 16);
const bareRate = await throughput('bare', 5000, 32);
const bridgeRate = await throughput('bridge', 5000, 32);
// Latency: ten seconds each at 1,000 requests per second, in alternating two-second blocks, so that a
// stall of the shared machine (five processes on two cores) lands on both paths alike.
const bareLatency: number[] = [];
const bridgeLatency: number[] = [];
for (let block = 0; block < 5; block++) {
  bareLatency.push(...(await paced('bare', 1000, 2)));
  bridgeLatency.push(...(await paced('bridge', 1000, 2)));
}
bareLatency.sort((a, b) => a - b);
bridgeLatency.sort((a, b) => a - b);

gateway.kill('SIGTERM');
bare.kill('SIGTERM');
peerIn.close();
peerOut.close();
await broker.close();
await nc.close();
await Promise.all([redisServer.stop(), natsServer.stop()]);

console.log(`bare_msgs_per_s=${bareRate.toFixed(0)} bridge_msgs_per_s=${bridgeRate.toFixed(0)}`);
console.log(
  `bare_p50_ms=${quantile(bareLatency, 0.5).toFixed(2)} bare_p99_ms=${quantile(bareLatency, 0.99).toFixed(2)}`,
);
console.log(`bridge_vs_bare=${(bridgeRate / bareRate).toFixed(2)}`);
console.log(`bridge_p50_ms=${quantile(bridgeLatency, 0.5).toFixed(2)}`);
console.log(`bridge_p99_ms=${quantile(bridgeLatency, 0.99).toFixed(2)}`);
process.exit(0);
