/*
 * npm run bench:check — an update check against a TUF repository holding 1,000 releases, served over
 * HTTPS on loopback, through the real checker (real Redis and NATS). Measures a first check (empty
 * trusted state) and a no-change check, and as the baseline curl fetching the same files in one run.
 * Prints key=value lines: check_first_ms, check_first_bytes, check_nochange_ms, check_nochange_requests,
 * check_nochange_bytes, plus the baseline and the request lists.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { checkerConfigSchema, startChecker } from '@aico-update/checker';
import type { AddReleaseInput } from '@aico-update/release';
import { startTestRepository } from '@aico-update/release/testing';
import { CHANNELS, createLogger, loadConfig } from '@aico-update/shared';
import { spawnNats, spawnRedis } from '@aico-update/shared/testing';

const RELEASES = 1000;
const t = await startTestRepository();
const artifact = join(t.workDir, 'artifact.bin');
await writeFile(artifact, Buffer.alloc(1024, 1));
const inputs: AddReleaseInput[] = [];
for (let i = 0; i < RELEASES; i++) {
  const [major, minor, patch] = [1 + Math.floor(i / 100), Math.floor(i / 10) % 10, i % 10];
  inputs.push({
    component: i % 4 === 3 ? 'frontend' : 'backend',
    version: `${major}.${minor}.${patch}`,
    channel: CHANNELS[i % 3] as string,
    notes: `Release notes for ${major}.${minor}.${patch}: fixes and improvements.`,
    artifacts: [artifact],
    force: true,
  });
}
await t.repo.addReleases(inputs);
const [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
const config = loadConfig(checkerConfigSchema, {
  env: {
    AICO_UPDATE_SERVER_METADATA_URL: t.metadataUrl,
    AICO_UPDATE_SERVER_CA_FILE: t.caFile,
    AICO_TUF_STATE_DIR: join(t.workDir, 'checker'),
    AICO_TUF_TRUSTED_ROOT: t.repo.trustedRootPath,
    AICO_INSTALLED: 'backend=1.0.0,frontend=1.0.0',
    AICO_UPDATE_CHANNEL: 'dev',
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_PORT: '0',
  },
});
const checker = await startChecker(config, { logger: createLogger('checker', 'warn'), schedule: false });

async function measure() {
  t.faults.resetRequests();
  const started = performance.now();
  const response = await checker.checkNow();
  const ms = performance.now() - started;
  if (response.outcome === 'failed') throw new Error(`check failed: ${response.error?.message}`);
  const requests = [...t.faults.requests];
  return { ms, requests, bytes: requests.reduce((sum, r) => sum + r.bytes, 0), response };
}

const first = await measure();
const nochange = await measure();

// Baseline: curl fetching exactly the files the first check fetched, in one process, same TLS setup.
const urls = first.requests.map((r) => `${t.server.url}${r.path}`);
const curlArgs = ['--silent', '--cacert', t.caFile, ...urls.flatMap((u) => ['-o', '/dev/null', u])];
// Asynchronously: the HTTPS server runs in this process and must keep serving while curl runs.
const curlRuns: number[] = [];
for (let run = 0; run < 3; run++) {
  const started = performance.now();
  await promisify(execFile)('curl', curlArgs);
  curlRuns.push(performance.now() - started);
}
const curlMs = Math.min(...curlRuns);

await checker.stop();
await Promise.all([redis.stop(), nats.stop(), t.close()]);

const found = first.response.components
  .map((c) => `${c.component}:${c.installed}->${c.update?.version ?? 'none'}`)
  .join(',');
console.log(`releases=${RELEASES}`);
console.log(`found=${found}`);
console.log(`check_first_ms=${first.ms.toFixed(1)}`);
console.log(`check_first_bytes=${first.bytes}`);
console.log(`check_first_requests=${first.requests.length}`);
console.log(`check_first_paths=${first.requests.map((r) => `${r.path}:${r.status}`).join(' ')}`);
console.log(`curl_same_files_ms=${curlMs.toFixed(1)}`);
console.log(`check_first_vs_curl=${(first.ms / curlMs).toFixed(2)}`);
console.log(`check_nochange_ms=${nochange.ms.toFixed(1)}`);
console.log(`check_nochange_requests=${nochange.requests.length}`);
console.log(`check_nochange_bytes=${nochange.bytes}`);
console.log(`check_nochange_paths=${nochange.requests.map((r) => `${r.path}:${r.status}`).join(' ')}`);
