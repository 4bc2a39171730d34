/*
 * npm run bench:install — the installer on the real Docker Engine with the sample busybox backend:
 *   stopfirst_overhead_s        downtime seen by a client polling every 10 ms during a stop-first swap,
 *                               minus (old container's stop time + new one's start-to-answering time,
 *                               both measured alone in the same run)
 *   startfirst_failed_requests  not measured: start-first swaps are not built yet
 *   rollback_s                  from the unhealthy verdict to the old version answering again
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DockerRuntime, type HealthVerdict, installRelease } from '@aico-update/installer';
import { stageRelease, testInstallDeps } from '@aico-update/installer/testing';
import { connectNats, connectRedis, ensureEventStream } from '@aico-update/shared';
import {
  buildSampleBackend,
  docker,
  freePort,
  makeTempDir,
  spawnNats,
  spawnRedis,
} from '@aico-update/shared/testing';
import { pino } from 'pino';

class TimedRuntime extends DockerRuntime {
  verdicts: { at: number; verdict: HealthVerdict }[] = [];
  override async waitHealthy(...args: Parameters<DockerRuntime['waitHealthy']>): Promise<HealthVerdict> {
    const verdict = await super.waitHealthy(...args);
    this.verdicts.push({ at: performance.now(), verdict });
    return verdict;
  }
}

const logger = pino({ level: 'silent' });
const [redisServer, natsServer] = await Promise.all([spawnRedis(), spawnNats()]);
const redis = await connectRedis(redisServer.url, logger);
const nc = await connectNats(natsServer.url, 'bench', logger);
await ensureEventStream(nc);
const dir = await makeTempDir('bench-install');
const port = await freePort();
const id = randomBytes(3).toString('hex');
const name = `aico-bench-${id}`;
const tag = `aico-bench/backend:${id}`;
const url = `http://127.0.0.1:${port}/api/v1/health`;
const runtime = new TimedRuntime();

async function answers(): Promise<string | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(500) });
    return response.ok ? ((await response.json()) as { version: string }).version : undefined;
  } catch {
    return undefined;
  }
}

async function untilAnswering(version: string): Promise<number> {
  for (;;) {
    if ((await answers()) === version) return performance.now();
    await new Promise((r) => setTimeout(r, 10));
  }
}

const run = (image: string, container: string) =>
  docker(
    'run',
    '-d',
    '--init',
    '--name',
    container,
    '--restart',
    'unless-stopped',
    '-p',
    `127.0.0.1:${port}:8771`,
    image,
  );

// Baseline, alone: stop time of the old container; start-to-answering time of the new one.
const oldId = await buildSampleBackend(tag, '1.0.0');
await buildSampleBackend(`${tag}-next`, '1.1.0');
await run(tag, name);
await untilAnswering('1.0.0');
let t = performance.now();
await docker('stop', name);
const stopSeconds = (performance.now() - t) / 1000;
await docker('rm', name);
t = performance.now();
await run(`${tag}-next`, `${name}-alone`);
const startSeconds = ((await untilAnswering('1.1.0')) - t) / 1000;
await docker('rm', '-f', `${name}-alone`);

// A stop-first swap under a client polling every 10 ms.
await run(tag, name);
await runtime.waitHealthy(name, { timeoutMs: 30_000, soakMs: 0 });
const deps = testInstallDeps(
  { runtime, redis, nc, logger },
  {
    cache_dir: join(dir, 'cache'),
    state_dir: join(dir, 'state'),
    services: { backend: name },
    probes: { backend: url },
    health_timeout_seconds: 60,
    soak_seconds: 1,
    backup: { dir: join(dir, 'backups') },
    prepare_timeout_seconds: 0.2,
  },
);
const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
  { service: 'backend', tag: `${tag}-next` },
]);
let polling = true;
let lastOk = 0;
let downtime = 0;
let failed = 0;
const poller = (async () => {
  while (polling) {
    const ok = (await answers()) !== undefined;
    const now = performance.now();
    if (ok) {
      if (failed > 0 && lastOk > 0) downtime = Math.max(downtime, now - lastOk);
      lastOk = now;
    } else {
      failed += 1;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
})();
await installRelease(deps, job);
polling = false;
await poller;

// Rollback: an unhealthy 1.2.0, from the verdict to 1.1.0 answering again.
await buildSampleBackend(`${tag}-broken`, '1.2.0', 'unhealthy');
const broken = await stageRelease(join(dir, 'cache'), 'backend', '1.2.0', [
  { service: 'backend', tag: `${tag}-broken` },
]);
runtime.verdicts = [];
const failure = installRelease(deps, broken).catch(() => undefined);
while (!runtime.verdicts.some((v) => !v.verdict.healthy)) await new Promise((r) => setTimeout(r, 5));
const verdictAt = runtime.verdicts.find((v) => !v.verdict.healthy)?.at as number;
const backAt = await untilAnswering('1.1.0');
await failure;

await docker('rm', '-f', name).catch(() => undefined);
await docker('rmi', '-f', tag, `${tag}-next`, `${tag}-broken`, oldId).catch(() => undefined);
await nc.close();
redis.disconnect();
await Promise.all([redisServer.stop(), natsServer.stop()]);

console.log(`stop_alone_s=${stopSeconds.toFixed(3)} start_to_answering_alone_s=${startSeconds.toFixed(3)}`);
console.log(`stopfirst_downtime_s=${(downtime / 1000).toFixed(3)} stopfirst_failed_requests=${failed}`);
console.log(`stopfirst_overhead_s=${(downtime / 1000 - stopSeconds - startSeconds).toFixed(3)}`);
console.log('startfirst_failed_requests=not_measured (start-first swaps are not built yet)');
console.log(`rollback_s=${((backAt - verdictAt) / 1000).toFixed(3)}`);
