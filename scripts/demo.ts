/*
 * The README's main job: the update system deployed with Docker Compose on this machine, with a
 * development update server and a sample AICO backend at 1.0.0, updated only through AICO's bus (an AICO
 * frontend on ZeroMQ with CurveZMQ): 1.1.0 is published, found, downloaded and installed; a Windows
 * frontend device then gets its frontend 1.1.0 package (which needs backend 1.1.0) from the home server;
 * a broken 1.2.0 is installed, rolled back and quarantined. The stack keeps running afterwards; the URLs are printed at the end.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  ComponentType,
  create,
  DownloadProgressSchema,
  DownloadUpdateRequestSchema,
  type Envelope,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  UpdateNotificationSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { freePort, makeTempDir, waitUntil } from '@aico-update/shared/testing';
import { curveKeyPair } from 'zeromq';
import { ZmqPeer } from '../services/bus-gateway/test/support/peer.ts';
import { CONTROL_TOKEN_FILE, ROOT, Stack, type StackOptions } from './stack.ts';

const say = (line: string) => console.log(line);
const step = (n: number, line: string) => say(`\n[${n}/7] ${line}`);

/** The preferred port when it is free, else any free one. */
async function port(preferred: number): Promise<number> {
  const free = await new Promise<boolean>((resolve) => {
    const server = createServer().once('error', () => resolve(false));
    server.listen(preferred, '127.0.0.1', () => server.close(() => resolve(true)));
  });
  return free ? preferred : freePort();
}

/** Compose v2 (`docker compose`) as most hosts have it; Debian 12's v1 where v2 is missing. */
const compose = await promisify(execFile)('docker', ['compose', 'version']).then(
  () => 'v2' as const,
  () => 'v1' as const,
);

// The demo's frontend has a stable key pair; the broker admits only keys on its allow-list.
const frontendKeys = curveKeyPair();
const options: StackOptions = {
  project: 'aico-demo',
  compose,
  repoDir: join(ROOT, '.demo', 'repo'),
  ports: {
    control: await port(8084),
    busPub: await port(5555),
    busSub: await port(5556),
    backend: await port(8771),
    prometheus: await port(9090),
  },
  backend: { container: 'aico-demo-backend', image: 'aico-example/backend:current' },
  frontendPublicKey: frontendKeys.publicKey,
};
const started = performance.now();

step(1, 'Deploying the update system with Docker Compose (a fresh demo: the last one is removed first)');
await Stack.remove(options.project, 'v1');
await Stack.remove(options.project, 'v2');
await rm(options.repoDir, { recursive: true, force: true });
const stack = await Stack.up(options, (line) => say(`      ${line}`));
await stack.healthy();
say(`      every service is healthy after ${((performance.now() - started) / 1000).toFixed(0)} s:`);
say('      redis (AOF), nats (JetStream), update-server (dev), checker, downloader, installer, bus-gateway');
say(
  `      the sample AICO backend answers ${await stack.backendVersion()} on http://127.0.0.1:${options.ports.backend}/api/v1/health`,
);

const frontend = new ZmqPeer(
  '127.0.0.1',
  options.ports.busPub,
  options.ports.busSub,
  await stack.brokerPublicKey(),
  frontendKeys,
);
await waitUntil(
  async () => (await fetch(`${stack.controlUrl}/readyz`).catch(() => undefined))?.status === 200,
  'the bus gateway',
  30_000,
);
await frontend.settle(1000);
let shown = 0;
/** Prints what arrived on the bus since the last call, in order. */
function flush(): void {
  for (const message of frontend.received.slice(shown)) {
    const line = describe(message.topic, message.envelope);
    if (line) say(`      ← ${line}`);
  }
  shown = frontend.received.length;
}
const show = setInterval(flush, 100);

function describe(topic: string, envelope: Envelope | undefined): string | undefined {
  if (!envelope) return undefined;
  if (topic === 'update.download.progress') {
    const p = unpackPayload(envelope, DownloadProgressSchema);
    return `${topic}: ${p.progressPercent.toFixed(0)} % (${p.bytesDownloaded} of ${p.totalBytes} bytes)`;
  }
  // Answers to the frontend's own requests are printed where they are awaited.
  if (topic === 'update.install.progress' || topic === 'update.install.complete') {
    return `${topic}: ${unpackPayload(envelope, InstallUpdateResponseSchema).message}`;
  }
  if (topic.startsWith('update.') && envelope.payload?.typeUrl.endsWith('UpdateNotification')) {
    return `${topic}: ${unpackPayload(envelope, UpdateNotificationSchema).message}`;
  }
  return undefined;
}

async function check(): Promise<void> {
  const correlationId = randomUUID();
  flush();
  say('      → update.check.request (UpdateCheckRequest)');
  await frontend.send('update.check.request', UpdateCheckRequestSchema, create(UpdateCheckRequestSchema), {
    correlation_id: correlationId,
    forced: 'true',
  });
  const answer = (await frontend.answer(correlationId, UpdateCheckResponseSchema, 60_000)).payload;
  flush();
  say(`      ← update.check.response: ${answer.updateMessage}`);
}

/** The Windows frontend device asks for itself (device_id, platform, the version it runs). */
async function deviceCheck(quiet = false) {
  const correlationId = randomUUID();
  if (!quiet) {
    flush();
    say('      → update.check.request (UpdateCheckRequest from frontend device "desk-pc", windows, 1.0.0)');
  }
  await frontend.send(
    'update.check.request',
    UpdateCheckRequestSchema,
    create(UpdateCheckRequestSchema, {
      componentType: ComponentType.COMPONENT_FRONTEND,
      deviceId: 'desk-pc',
      currentVersion: { version: '1.0.0' },
      systemInfo: { platform: 'windows' },
    }),
    { correlation_id: correlationId },
  );
  const answer = await frontend.answer(correlationId, UpdateCheckResponseSchema, 60_000);
  if (!quiet) say(`      ← update.check.response (for desk-pc): ${answer.payload.updateMessage}`);
  return answer;
}

async function install(updateId: string): Promise<void> {
  const correlationId = randomUUID();
  flush();
  say(`      → update.install.request (InstallUpdateRequest ${updateId})`);
  await frontend.send(
    'update.install.request',
    InstallUpdateRequestSchema,
    create(InstallUpdateRequestSchema, { updateId, autoRestart: true }),
    { correlation_id: correlationId },
  );
  const answer = (await frontend.answer(correlationId, InstallUpdateResponseSchema, 60_000)).payload;
  flush();
  say(`      ← update.install.response: ${answer.message}`);
}

const count = (topic: string) => frontend.received.filter((m) => m.topic === topic).length;

step(
  2,
  'Publishing backend 1.1.0, and a Windows frontend 1.1.0 that needs it, on the update server (signed TUF releases)',
);
await stack.publish('1.1.0');
const windowsPackage = join(await makeTempDir('demo-frontend'), 'aico-1.1.0-windows.msix');
await writeFile(windowsPackage, randomBytes(200 * 1024));
await stack.repo.addRelease({
  component: 'frontend',
  version: '1.1.0',
  channel: 'stable',
  notes: 'Frontend 1.1.0 for backend 1.1.0',
  artifacts: [],
  packages: [{ platform: 'windows', file: windowsPackage }],
  needsBackend: '>=1.1.0',
});
step(3, 'An AICO frontend asks for updates over the bus; the system downloads what it found');
await check();
await deviceCheck();
await waitUntil(() => count('update.download.complete') >= 1, 'the download', 120_000);
step(4, 'The frontend asks for the install');
await install('backend-1.1.0');
await waitUntil(() => count('update.install.complete') >= 1, 'the install', 120_000);
await new Promise((r) => setTimeout(r, 300));
flush();
say(`      the sample AICO backend now answers ${await stack.backendVersion()}`);

step(5, 'The Windows frontend device now gets its package: backend first, then the frontend');
await waitUntil(
  async () => (await deviceCheck(true)).payload.updateAvailable,
  'the frontend offer',
  60_000,
  2000,
);
const offer = await deviceCheck();
const pkg = offer.envelope.attributes as Record<string, string>;
{
  const correlationId = randomUUID();
  say(
    '      → update.download.request (DownloadUpdateRequest frontend-1.1.0): the home server fetches its package',
  );
  await frontend.send(
    'update.download.request',
    DownloadUpdateRequestSchema,
    create(DownloadUpdateRequestSchema, { updateId: 'frontend-1.1.0' }),
    { correlation_id: correlationId },
  );
  await frontend.answer(correlationId, DownloadProgressSchema, 60_000);
}
await waitUntil(() => count('update.download.complete') >= 2, 'the frontend download', 120_000);
flush();
const fetched = await waitUntil(
  async () => {
    const response = await fetch(`${stack.controlUrl}${pkg.package_url}`, {
      headers: await stack.controlHeaders(),
    });
    return response.ok ? response : undefined;
  },
  'the package',
  30_000,
  500,
);
const bytes = Buffer.from(await fetched.arrayBuffer());
const hash = createHash('sha256').update(bytes).digest('hex');
say(
  `      GET ${pkg.package_url}: ${bytes.length} bytes, ETag ${fetched.headers.get('etag')}, sha256 ${hash === pkg.package_sha256 ? 'matches the signed target' : 'DOES NOT MATCH'}`,
);
say(
  `      (the TUF metadata beside it, for the device's own verification: ${stack.controlUrl}${pkg.metadata_url})`,
);

step(6, 'A broken 1.2.0 (its health check fails) is published and installed on request');
await stack.publish('1.2.0', 'unhealthy');
await check();
await waitUntil(() => count('update.download.complete') >= 3, 'the download', 120_000);
await install('backend-1.2.0');
await waitUntil(() => count('update.install.complete') >= 2, 'the install', 120_000);
await new Promise((r) => setTimeout(r, 300));
flush();
say(`      rolled back: the sample AICO backend answers ${await stack.backendVersion()}`);
say('      the rolled-back release is quarantined: the next check does not offer it');
await check();
say('      every decision, with its reason (GET /api/v1/history):');
const { history } = (await (
  await fetch(`${stack.controlUrl}/api/v1/history?limit=6`, { headers: await stack.controlHeaders() })
).json()) as { history: { service: string; kind: string; version?: string; reason?: string }[] };
for (const d of history.reverse()) {
  say(
    `        ${d.service.padEnd(10)} ${`${d.kind} ${d.version ?? ''}`.padEnd(24)} ${(d.reason ?? '').slice(0, 110)}`,
  );
}
say('      waiting for Prometheus to scrape the installer and evaluate its alert rules (up to a minute)');
const alert = await waitUntil(
  async () => (await stack.firingAlerts()).find((a) => a.labels.alertname === 'AicoUpdateRolledBack'),
  'the rollback alert',
  90_000,
  1000,
).catch(() => undefined);
say(
  alert
    ? `      Prometheus alert firing: ${alert.labels.alertname} (${alert.labels.component}, ${alert.labels.reason})`
    : '      the rollback alert has not fired yet; see the Prometheus URL below',
);
clearInterval(show);
frontend.close();

const files =
  '-f docker-compose.yml -f infra/compose/broker.yml -f examples/aico-stack/docker-compose.yml --profile dev --profile monitoring';
step(7, `Done in ${((performance.now() - started) / 1000).toFixed(0)} s. The stack keeps running:`);
say(
  `      operator page     ${stack.controlUrl}/   (open it in a browser; log in with the token below; it stays in that tab only)`,
);
say(
  `      control API       ${stack.controlUrl}/api/v1/status   (history, settings, check, download, install now or at a time, dry run, skip, rollback: README)`,
);
say(
  `      its token         ${await stack.controlToken()}   (made on first start; shown by: docker exec ${stack.container('bus-gateway')} cat ${CONTROL_TOKEN_FILE})`,
);
say(
  `      live events       curl -N -H "Authorization: Bearer $(docker exec ${stack.container('bus-gateway')} cat ${CONTROL_TOKEN_FILE})" ${stack.controlUrl}/api/v1/events`,
);
say(
  `      metrics           ${stack.controlUrl}/metrics (gateway); the others: docker exec ${stack.container('installer')} node -e "fetch('http://127.0.0.1:8083/metrics').then(r=>r.text()).then(console.log)"`,
);
say(
  `      AICO bus          tcp://127.0.0.1:${options.ports.busPub} (publish) and :${options.ports.busSub} (subscribe), CurveZMQ with the broker's own key ${await stack.brokerPublicKey()}; admitted client keys: bus.zeromq.client_keys`,
);
say(
  `      Prometheus        ${stack.prometheusUrl}/alerts (scrapes every service; rules in infra/prometheus)`,
);
say(`      sample backend    http://127.0.0.1:${options.ports.backend}/api/v1/health`);
say(
  `      stop it           COMPOSE_PROJECT_NAME=${options.project} AICO_UPDATE_SERVER_METADATA_URL=x ${compose === 'v2' ? 'docker compose' : 'docker-compose'} ${files} down -v`,
);
process.exit(0);
