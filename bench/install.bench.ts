/*
 * npm run bench:install — the installer on the real Docker Engine with the sample busybox backend:
 *   stopfirst_overhead_s        downtime seen by a client polling every 10 ms during a stop-first swap,
 *                               minus (old container's stop time + new one's start-to-answering time,
 *                               both measured alone in the same run)
 *   bare_stopfirst_downtime_s   the same swap by hand (docker stop; docker start) under the same client
 *   stopfirst_vs_bare_s         what the installer adds to the engine's own swap downtime
 *   startfirst_failed_requests  requests failing during a start-first swap, from a client container on
 *                               the service's network polling it by its alias every 10 ms
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

/*
 * One poll. The sample answers in ~2 ms; a request unanswered in 100 ms counts as failed and the next
 * one goes at once, so downtime is resolved to ~0.1 s. (Right after a container starts, docker-proxy
 * accepts connections its backend cannot take yet; they hang rather than fail: a longer timeout would
 * measure the timeout, not the swap.) The same poll measures the baseline alone.
 */
async function answers(): Promise<string | undefined> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(100) });
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

/** Runs `action` under a client polling every 10 ms: the longest gap between answers, and failures. */
async function underPolling(action: () => Promise<unknown>): Promise<{ downtime: number; failed: number }> {
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
  await action();
  polling = false;
  await poller;
  return { downtime, failed };
}

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

// The same swap by hand, `docker stop` then `docker start` of a container created beforehand, under
// the same client: what the engine itself costs (docker-proxy takes connections before the new
// container's network is up; they hang until the host's neighbour entry resolves, ~1 s).
await run(tag, `${name}-bare`);
await untilAnswering('1.0.0');
await docker(
  'create',
  '--init',
  '--name',
  `${name}-bare-next`,
  '-p',
  `127.0.0.1:${port}:8771`,
  `${tag}-next`,
);
const bare = await underPolling(async () => {
  await docker('stop', `${name}-bare`);
  await docker('start', `${name}-bare-next`);
  await untilAnswering('1.1.0');
});
await docker('rm', '-f', `${name}-bare`, `${name}-bare-next`);

// A stop-first swap by the installer under a client polling every 10 ms.
await run(tag, name);
await runtime.waitHealthy(name, { timeoutMs: 30_000, soakMs: 0 });
const deps = await testInstallDeps(
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
const { downtime, failed } = await underPolling(() => installRelease(deps, deps.seal.seal(job)));

// Rollback: an unhealthy 1.2.0, from the verdict to 1.1.0 answering again.
await buildSampleBackend(`${tag}-broken`, '1.2.0', 'unhealthy');
const broken = await stageRelease(join(dir, 'cache'), 'backend', '1.2.0', [
  { service: 'backend', tag: `${tag}-broken` },
]);
runtime.verdicts = [];
const failure = installRelease(deps, deps.seal.seal(broken)).catch(() => undefined);
while (!runtime.verdicts.some((v) => !v.verdict.healthy)) await new Promise((r) => setTimeout(r, 5));
const verdictAt = runtime.verdicts.find((v) => !v.verdict.healthy)?.at as number;
const backAt = await untilAnswering('1.1.0');
await failure;

// Start-first: no host port; a client on the network reaches the service by its alias.
const network = `aico-bench-net-${id}`;
const sfName = `${name}-sf`;
const client = `${name}-client`;
await docker('network', 'create', network);
await docker(
  'run',
  '-d',
  '--init',
  '--name',
  sfName,
  '--network',
  network,
  '--network-alias',
  'backend',
  tag,
);
await runtime.waitHealthy(sfName, { timeoutMs: 30_000, soakMs: 0 });
await buildSampleBackend(`${tag}-sf`, '1.3.0');
const startFirst = await testInstallDeps(
  { runtime, redis, nc, logger },
  {
    cache_dir: join(dir, 'cache'),
    state_dir: join(dir, 'state-sf'),
    services: { backend: sfName },
    strategy: { backend: 'start-first' },
    health_timeout_seconds: 60,
    soak_seconds: 1,
    backup: { dir: join(dir, 'backups') },
    prepare_timeout_seconds: 0.2,
  },
);
const sfJob = await stageRelease(join(dir, 'cache'), 'backend', '1.3.0', [
  { service: 'backend', tag: `${tag}-sf` },
]);
await docker(
  'run',
  '-d',
  '--name',
  client,
  '--network',
  network,
  tag,
  '/bin/sh',
  '-c',
  // Resolved on every request, as a client of the service name would (busybox's static wget cannot
  // resolve names itself, and its -T option crashes; nslookup and timeout work).
  'while :; do ip=$(nslookup backend 2>/dev/null | awk \'/^Address: /{print $2}\' | head -1); if timeout 2 wget -q -O /dev/null "http://$ip:8771/api/v1/health"; then echo ok; else echo fail; fi; sleep 0.01; done',
);
await new Promise((r) => setTimeout(r, 1000));
await installRelease(startFirst, startFirst.seal.seal(sfJob));
await new Promise((r) => setTimeout(r, 1000));
await docker('kill', client);
const sfLog = (await docker('logs', client).catch(() => '')).split('\n');
await docker('rm', '-f', name, sfName, client).catch(() => undefined);
await docker('network', 'rm', network).catch(() => undefined);
await docker('rmi', '-f', tag, `${tag}-next`, `${tag}-broken`, `${tag}-sf`, oldId).catch(() => undefined);
await nc.close();
redis.disconnect();
await Promise.all([redisServer.stop(), natsServer.stop()]);

console.log(`stop_alone_s=${stopSeconds.toFixed(3)} start_to_answering_alone_s=${startSeconds.toFixed(3)}`);
console.log(`stopfirst_downtime_s=${(downtime / 1000).toFixed(3)} stopfirst_failed_requests=${failed}`);
console.log(`stopfirst_overhead_s=${(downtime / 1000 - stopSeconds - startSeconds).toFixed(3)}`);
console.log(
  `bare_stopfirst_downtime_s=${(bare.downtime / 1000).toFixed(3)} stopfirst_vs_bare_s=${((downtime - bare.downtime) / 1000).toFixed(3)}`,
);
console.log(
  `startfirst_failed_requests=${sfLog.filter((l) => l === 'fail').length} startfirst_requests=${sfLog.filter((l) => l === 'ok' || l === 'fail').length}`,
);
console.log(`rollback_s=${((backAt - verdictAt) / 1000).toFixed(3)}`);
