import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { docker, freePort, waitUntil } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/*
 * The deployment as an operator runs it: the base images made from this machine's binaries
 * (infra/base-images.sh), the service images built from the Dockerfile, and docker-compose.yml brought
 * up with Docker Compose v1 (the only one here): every service healthy, hardened as promised.
 */

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');
const project = `aicoupd${randomBytes(3).toString('hex')}`;
let repo: TestRepository;
let env: NodeJS.ProcessEnv;

async function compose(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('docker-compose', args, { cwd: root, env, maxBuffer: 32 * 1024 * 1024 });
    return stdout.trim();
  } catch (error) {
    const e = error as { stderr?: string };
    throw new Error(`docker-compose ${args.join(' ')} failed: ${e.stderr?.trim().slice(-2000)}`);
  }
}

beforeAll(async () => {
  repo = await startTestRepository();
  env = {
    ...process.env,
    COMPOSE_PROJECT_NAME: project,
    AICO_UPDATE_SERVER_METADATA_URL: 'https://updates.invalid/metadata',
    AICO_TRUSTED_ROOT_FILE: repo.repo.trustedRootPath,
    AICO_BUS_ZEROMQ_BIND_BROKER: 'true',
    AICO_CONTROL_PORT: String(await freePort()),
  };
  await run('bash', [resolve(root, 'infra/base-images.sh')], { cwd: root });
  await compose('build', '-q');
}, 300_000);

afterAll(async () => {
  await compose('down', '-v', '--remove-orphans').catch(() => undefined);
  await repo?.close();
});

describe('docker-compose.yml', () => {
  it('brings the update system up healthy, read-only, as non-root where it can', async () => {
    await compose('up', '-d');
    const services = ['redis', 'nats', 'checker', 'downloader', 'installer', 'bus-gateway'];
    const container = (service: string) => `${project}_${service}_1`;
    const health = async (service: string) =>
      docker('inspect', '--format', '{{.State.Health.Status}}', container(service));
    await waitUntil(
      async () => (await Promise.all(services.map(health))).every((h) => h === 'healthy'),
      'every service to be healthy',
      120_000,
      1000,
    );
    for (const service of ['checker', 'downloader', 'installer', 'bus-gateway']) {
      const info = JSON.parse(await docker('inspect', container(service)))[0];
      expect(info.HostConfig.ReadonlyRootfs, service).toBe(true);
      expect(info.HostConfig.Init, service).toBe(true);
      expect(info.Config.User, service).toBe(service === 'installer' ? '0:0' : 'node');
    }
    // The gateway is its own AICO broker here: its round trip works, so it is ready.
    const ready = await waitUntil(
      async () => {
        const response = await fetch(`http://127.0.0.1:${env.AICO_CONTROL_PORT}/readyz`).catch(
          () => undefined,
        );
        return response?.status === 200 ? response : undefined;
      },
      'the bus gateway to be ready',
      30_000,
      500,
    );
    expect(ready.status).toBe(200);
    // The checker reached its configuration and reports the unreachable server as such.
    const status = (await (
      await fetch(`http://127.0.0.1:${env.AICO_CONTROL_PORT}/api/v1/status`)
    ).json()) as {
      last_check: unknown;
    };
    expect(status.last_check).toMatchObject({ outcome: 'failed', error: { kind: 'unreachable' } });
  });
});
