/*
 * The README's main job, for now: a local TUF update server with sample releases, real Redis and NATS,
 * and the checker finding the newest release, printed as a person would want to read it.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { checkerConfigSchema, startChecker } from '@aico-update/checker';
import { downloaderConfigSchema, startDownloader } from '@aico-update/downloader';
import { initRepository, serveRepository } from '@aico-update/release';
import {
  createLogger,
  type DownloadComplete,
  type DownloadProgress,
  lastEvent,
  loadConfig,
  Subjects,
  Topics,
  type UpdateAvailable,
} from '@aico-update/shared';
import { spawnNats, spawnRedis } from '@aico-update/shared/testing';
import { connect } from '@nats-io/transport-node';

const dir = resolve(import.meta.dirname, '..', '.demo');
const say = (line: string) => console.log(line);

await rm(dir, { recursive: true, force: true });
await mkdir(join(dir, 'artifacts'), { recursive: true });

say('AICO Update System — demo: discover a release securely over TUF, then download it verified\n');
const repo = await initRepository(join(dir, 'repo'));
for (const [version, notes] of [
  ['1.0.0', 'First release.'],
  ['1.1.0', 'Faster memory recall; fixes a reconnect bug.'],
] as const) {
  const artifact = join(dir, 'artifacts', `backend-${version}.tar`);
  // 8 MiB, so that the capped download below takes a moment and shows its progress.
  await writeFile(artifact, Buffer.alloc(8 * 1024 * 1024, `sample AICO backend ${version}\n`));
  await repo.addRelease({ component: 'backend', version, channel: 'stable', notes, artifacts: [artifact] });
}
const server = await serveRepository({ publicDir: repo.publicDir, tlsDir: join(repo.dir, 'tls') });
say(
  `1. update server   ${server.url}  (aico-release: backend 1.0.0 and 1.1.0 signed, HTTPS with a dev certificate)`,
);

const [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
say(`2. redis, nats     ${redis.url}, ${nats.url}`);

const config = loadConfig(checkerConfigSchema, {
  env: {
    AICO_UPDATE_SERVER_METADATA_URL: `${server.url}/metadata`,
    AICO_UPDATE_SERVER_CA_FILE: server.caFile,
    AICO_TUF_STATE_DIR: join(dir, 'checker-state'),
    AICO_TUF_TRUSTED_ROOT: repo.trustedRootPath,
    AICO_INSTALLED: 'backend=1.0.0',
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_PORT: '0',
    AICO_LOG_LEVEL: process.env.AICO_LOG_LEVEL ?? 'warn',
  },
});
const checker = await startChecker(config, {
  logger: createLogger('checker', config.log.level),
  schedule: false,
});
say(
  `3. checker         installed backend 1.0.0, channel ${config.update.channel}, metrics http://127.0.0.1:${checker.port}/metrics\n`,
);

const response = await checker.checkNow({ source: 'demo' });
if (response.outcome === 'failed') {
  say(`check FAILED (${response.error?.kind}/${response.error?.code}): ${response.error?.message}`);
  process.exitCode = 1;
} else {
  for (const c of response.components) {
    if (!c.update) {
      say(`check → ${c.component} ${c.installed} is up to date`);
      continue;
    }
    const u = c.update;
    say(
      `check → update available: ${u.component} ${c.installed} → ${u.version} (${u.size_bytes} bytes, ${u.critical ? 'CRITICAL' : 'not critical'})`,
    );
    say(`        notes: ${u.notes}`);
    say(
      `        verified: signed metadata + manifest ${u.target.path} sha256 ${u.target.sha256.slice(0, 16)}…`,
    );
  }
  say(`        took ${response.duration_ms} ms`);
}

// A subscriber that connects after the fact still sees update.available: the event stream is durable.
const nc = await connect({ servers: nats.url });
const event = await lastEvent<UpdateAvailable>(nc, Topics.available);
if (event) {
  say(
    `\nNATS ${Topics.available} (read by a late subscriber): ${event.release.component} ${event.release.version}, detected ${event.detected_at}`,
  );
}
const again = await checker.checkNow({ source: 'demo' });
say(`second check: ${again.outcome}, ${again.duration_ms} ms (no new metadata to download)`);

// The check queued the download (update.auto_download); the downloader takes it, capped at 4 MiB/s.
const downloaderConfig = loadConfig(downloaderConfigSchema, {
  env: {
    AICO_UPDATE_SERVER_METADATA_URL: `${server.url}/metadata`,
    AICO_UPDATE_SERVER_CA_FILE: server.caFile,
    AICO_TUF_STATE_DIR: join(dir, 'downloader-state'),
    AICO_TUF_TRUSTED_ROOT: repo.trustedRootPath,
    AICO_DOWNLOADER_CACHE_DIR: join(dir, 'cache'),
    AICO_DOWNLOADER_MAX_KIB_PER_SECOND: '4096',
    AICO_DOWNLOADER_FREE_SPACE_HEADROOM_MIB: '16',
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_PORT: '0',
    AICO_LOG_LEVEL: process.env.AICO_LOG_LEVEL ?? 'warn',
  },
});
say('\n4. downloader      takes the queued job: verified, resumable, 4 MiB/s cap');
const completed = new Promise<DownloadComplete>((resolveComplete) => {
  nc.subscribe(Subjects.event(Topics.downloadProgress), {
    callback: (_e, m) => {
      const p = m.json<DownloadProgress>();
      const eta = p.eta_seconds === null ? '?' : `${p.eta_seconds}s`;
      say(
        `   ${Topics.downloadProgress}  ${p.percent.toFixed(1).padStart(5)} %  ${(p.bytes_done / 1048576).toFixed(1)}/${(p.total_bytes / 1048576).toFixed(1)} MiB  ${(p.rate_bytes_per_second / 1048576).toFixed(1)} MiB/s  eta ${eta}  ${p.status}`,
      );
    },
  });
  nc.subscribe(Subjects.event(Topics.downloadComplete), {
    max: 1,
    callback: (_e, m) => resolveComplete(m.json()),
  });
});
const downloader = await startDownloader(downloaderConfig, {
  logger: createLogger('downloader', downloaderConfig.log.level),
});
const done = await completed;
say(
  `   ${Topics.downloadComplete}: ${done.release.component} ${done.release.version}, ${done.bytes_fetched} bytes fetched and verified in ${done.duration_ms} ms; install: ${done.install} (update.auto_install is off: it waits for update.install.request)`,
);

await nc.close();
await downloader.stop();
await checker.stop();
await Promise.all([redis.stop(), nats.stop(), server.close()]);
say('\ndone. Next: bash scripts/test runs every test; see README.md for deployment and configuration.');
