import { createServer, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { RunningChecker } from '@aico-update/checker';
import { startTestChecker } from '@aico-update/checker/testing';
import { installerConfigSchema, type RunningInstaller, startInstaller } from '@aico-update/installer';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import {
  EventPublisher,
  ensureEventStream,
  loadConfig,
  StateKeys,
  Subjects,
  Topics,
} from '@aico-update/shared';
import {
  freePort,
  launchChromium,
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
const TOKEN = 'let-me-in-please-0123456789';

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
        AICO_CONTROL_STATE_DIR: join(dir, 'gateway'),
        AICO_CONTROL_REQUESTS_PER_SECOND: '50',
        AICO_CONTROL_MAX_EVENT_STREAMS: '2',
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

/** A raw HTTP request with exactly the given headers (fetch cannot set Host). */
function raw(
  method: string,
  path: string,
  headers: Record<string, string>,
  body = '',
  prefix = '/api/v1',
): Promise<{ status: number; body: string; headers?: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: gateway.port, method, path: `${prefix}${path}`, headers },
      (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('control API: only the owner drives it', () => {
  it('needs the token, always; a wrong one is refused', async () => {
    const response = await fetch(`${base}/status`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
    const wrong = await fetch(`${base}/status`, { headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(401);
  });

  it("a web page's no-cors text/plain POST is refused and installs nothing", async () => {
    // What `fetch('http://127.0.0.1:8084/api/v1/install', {method: 'POST', mode: 'no-cors', body: 'x'})`
    // sends from a page on another site: no preflight, no Authorization, text/plain, its Origin.
    const host = `127.0.0.1:${gateway.port}`;
    const page = { host, origin: 'http://evil.example', 'content-type': 'text/plain;charset=UTF-8' };
    const attempt = await raw('POST', '/install', page, 'x');
    expect(attempt.status).toBe(403);
    expect(JSON.parse(attempt.body)).toMatchObject({ error: { code: 'ORIGIN_NOT_ALLOWED' } });
    // Even with the token (a leaked one), not from that page, and not as text/plain.
    expect((await raw('POST', '/install', { ...page, authorization: `Bearer ${TOKEN}` }, 'x')).status).toBe(
      403,
    );
    const plain = await raw(
      'POST',
      '/install',
      { host, authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain' },
      '{}',
    );
    expect(plain.status).toBe(415);
    expect(await redisClient.llen(StateKeys.installHistory)).toBe(0);
  });

  it('a real browser: a page of another origin sends the no-cors POST, the gateway refuses it, nothing installs', async () => {
    const installs: string[] = [];
    const sub = nc.subscribe(Subjects.command(Topics.installRequest), {
      callback: (_e, m) => void installs.push(m.string()),
    });
    const refusedByOrigin = async () => {
      const text = await (await fetch(`http://127.0.0.1:${gateway.port}/metrics`)).text();
      return Number(
        /aico_update_control_requests_refused_total\{reason="origin"[^}]*\} (\d+)/.exec(text)?.[1] ?? 0,
      );
    };
    const before = await refusedByOrigin();
    // The attacker's page, as any site the user visits could serve it (here on another local port).
    const target = `http://127.0.0.1:${gateway.port}/api/v1/install`;
    const pageServer = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(
        `<!doctype html><title>waiting</title><script>fetch(${JSON.stringify(target)}, {method: 'POST', mode: 'no-cors', body: 'x'}).then(() => { document.title = 'sent'; }, (e) => { document.title = 'error ' + e; });</script>`,
      );
    });
    await new Promise<void>((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${(pageServer.address() as { port: number }).port}/`);
      await page.waitForFunction("document.title !== 'waiting'", undefined, { timeout: 10_000 });
      // no-cors: the page learns nothing of the answer, but the request went out.
      expect(await page.title()).toBe('sent');
    } finally {
      await browser.close();
      pageServer.close();
    }
    expect(await refusedByOrigin()).toBe(before + 1);
    await nc.flush();
    expect(installs).toEqual([]);
    sub.unsubscribe();
  });

  it('a foreign Host (DNS rebinding) is refused even with the token', async () => {
    const rebound = await raw('GET', '/history', {
      host: `evil.example:${gateway.port}`,
      authorization: `Bearer ${TOKEN}`,
    });
    expect(rebound.status).toBe(403);
    expect(JSON.parse(rebound.body)).toMatchObject({ error: { code: 'HOST_NOT_ALLOWED' } });
    const ok = await raw('GET', '/history', {
      host: `localhost:${gateway.port}`,
      authorization: `Bearer ${TOKEN}`,
    });
    expect(ok.status).toBe(200);
  });

  it('the operator page needs no token but gets the same Host check, and loads from this origin only', async () => {
    const rebound = await raw('GET', '/', { host: `evil.example:${gateway.port}` }, '', '');
    expect(rebound.status).toBe(403);
    const page = await raw('GET', '/', { host: `localhost:${gateway.port}` }, '', '');
    expect(page.status).toBe(200);
    expect(page.body).toContain('/assets/app.js');
    expect(page.headers?.['content-security-policy']).toMatch(
      /default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'/,
    );
    const other = await raw(
      'GET',
      '/assets/..%2F..%2Fsrc%2Fmain.ts',
      { host: `localhost:${gateway.port}` },
      '',
      '',
    );
    expect(other.status).toBe(404);
  });

  it('bounds event streams and request rates; /readyz and /metrics stay open and tell no secrets', async () => {
    const controllers = [new AbortController(), new AbortController()];
    for (const c of controllers) {
      const r = await fetch(`${base}/events`, { headers: auth, signal: c.signal });
      await (r.body as ReadableStream<Uint8Array>).getReader().read();
    }
    const third = await fetch(`${base}/events`, { headers: auth });
    expect(third.status).toBe(503);
    expect(await third.json()).toMatchObject({ error: { code: 'TOO_MANY_STREAMS' } });
    for (const c of controllers) c.abort();

    const open = `http://127.0.0.1:${gateway.port}`;
    const ready = await (await fetch(`${open}/readyz`)).text();
    const metrics = await (await fetch(`${open}/metrics`)).text();
    for (const text of [ready, metrics]) {
      expect(text).not.toContain(TOKEN);
      expect(text).not.toMatch(/redis:\/\/|nats:\/\/|tcp:\/\/|https?:\/\//);
    }
    const burst = await Promise.all(
      Array.from({ length: 150 }, () => fetch(`${base}/status`, { headers: auth })),
    );
    expect(burst.some((r) => r.status === 429)).toBe(true);
    await new Promise((r) => setTimeout(r, 1100));
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

    // An install history entry as earlier versions wrote it reads as the installer's decision.
    const old = { version: '1.0.0', outcome: 'installed', at: '2026-11-01T00:00:00.000Z' };
    await redisClient.lpush(StateKeys.installHistory, JSON.stringify(old));
    expect(await (await fetch(`${base}/history?service=installer`, { headers: auth })).json()).toEqual({
      history: [{ ...old, kind: 'installed', service: 'installer' }],
    });
    // The check is a decision too, with what it found; the filters narrow the merged history.
    const all = ((await (await fetch(`${base}/history`, { headers: auth })).json()) as { history: unknown[] })
      .history;
    // (auto_download is off in this deployment: the release waits for the user, and says so.)
    expect(all.slice(0, 2)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          service: 'checker',
          kind: 'checked',
          reason: expect.stringContaining('1.1.0 available'),
        }),
        expect.objectContaining({ service: 'checker', kind: 'waiting_for_user', version: '1.1.0' }),
      ]),
    );
    expect(all.at(-1)).toEqual({ ...old, kind: 'installed', service: 'installer' });
    const installedOnly = (await (
      await fetch(`${base}/history?kind=installed`, { headers: auth })
    ).json()) as {
      history: unknown[];
    };
    expect(installedOnly.history).toHaveLength(1);
    expect((await fetch(`${base}/history?since=yesterday`, { headers: auth })).status).toBe(400);
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
