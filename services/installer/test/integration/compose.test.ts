import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureEventStream } from '@aico-update/shared';
import {
  buildSampleBackend,
  docker,
  makeTempDir,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../src/adapters/docker-runtime.ts';
import { installRelease } from '../../src/handlers/install-release.ts';
import { testInstallDeps } from '../support/deps.ts';
import { stageRelease } from '../support/stage.ts';

/* A deployment made with Docker Compose (v1, the one these machines have): an update survives `up -d`. */

const run = promisify(execFile);
let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let dir: string;
const project = `aicotest${randomBytes(3).toString('hex')}`;
const tag = `aico-test/compose-backend:${project}`;

async function compose(...args: string[]): Promise<string> {
  const { stdout } = await run('docker-compose', [
    '-p',
    project,
    '-f',
    join(dir, 'docker-compose.yml'),
    ...args,
  ]);
  return stdout.trim();
}

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  await ensureEventStream(nc);
  dir = await makeTempDir('compose');
});

afterAll(async () => {
  await compose('down', '-v').catch(() => undefined);
  await docker('rmi', '-f', tag).catch(() => undefined);
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

describe('installer with Docker Compose', () => {
  it('docker-compose up -d after an update keeps the new version', async () => {
    await buildSampleBackend(tag, '1.0.0');
    await writeFile(
      join(dir, 'docker-compose.yml'),
      `services:\n  backend:\n    image: ${tag}\n    init: true\n    restart: unless-stopped\n    environment:\n      AICO_TENANT: home\n    volumes:\n      - data:/data\nvolumes:\n  data: {}\n`,
    );
    await compose('up', '-d');
    const container = await docker(
      'ps',
      '--filter',
      `label=com.docker.compose.project=${project}`,
      '--format',
      '{{.Names}}',
    );
    const runtime = new DockerRuntime();
    await runtime.waitHealthy(container, { timeoutMs: 20_000, soakMs: 0 });

    const newId = await buildSampleBackend(`${tag}-next`, '1.1.0');
    const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
      { service: 'backend', tag: `${tag}-next` },
    ]);
    const deps = await testInstallDeps(
      { runtime, redis: redisClient, nc },
      {
        cache_dir: join(dir, 'cache'),
        state_dir: join(dir, 'state'),
        services: { backend: container },
        health_timeout_seconds: 20,
        soak_seconds: 1,
        backup: { dir: join(dir, 'backups') },
        prepare_timeout_seconds: 0.3,
      },
    );
    await installRelease(deps, deps.seal.seal(job));
    const installedId = await docker('inspect', '--format', '{{.Id}}', container);

    expect(await docker('inspect', '--format', '{{.Image}}', installedId)).toBe(newId);

    // Compose v1 hashes the image id into its config hash, so it recreates the container once; what
    // matters is that it recreates it from the installed image, not the old one.
    await compose('up', '-d');
    const after = await compose('ps', '-q');
    expect(await docker('inspect', '--format', '{{.Image}}', after)).toBe(newId);
    await runtime.waitHealthy(container, { timeoutMs: 20_000, soakMs: 0 });
    expect(await docker('inspect', '--format', '{{.State.Health.Status}}', after)).toBe('healthy');
    expect(await docker('inspect', '--format', '{{range .Config.Env}}{{println .}}{{end}}', after)).toContain(
      'AICO_TENANT=home',
    );
  });
});
