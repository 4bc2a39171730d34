import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmod } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import {
  create,
  type Envelope,
  InstallStatus,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { AICO_BROKER_PUBLIC_KEY } from '@aico-update/bus-gateway';
import { initRepository, type Repository } from '@aico-update/release';
import { buildSampleBackend, docker, freePort, makeTempDir, waitUntil } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZmqPeer } from '../../services/bus-gateway/test/support/peer.ts';

/*
 * The deployment as an operator runs it, proven end to end on the real Docker Engine with Compose v1:
 * base images made from this machine's binaries (infra/base-images.sh), the service images built from
 * the Dockerfile, docker-compose.yml with the development update server (profile dev), the gateway as
 * AICO's broker (infra/compose/broker.yml), and the example AICO stack (a sample backend at 1.0.0).
 * Then, only through the bus in AICO's wire format: 1.1.0 is published, found, downloaded, installed;
 * a broken 1.2.0 is installed, fails its health gate and is rolled back; `up -d` keeps 1.1.0.
 */

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '../..');
const id = randomBytes(3).toString('hex');
const project = `aicoupd${id}`;
const backend = `aico-backend-${id}`;
const backendImage = `aico-example/backend:current-${id}`;
const files = [
  '-f',
  'docker-compose.yml',
  '-f',
  'infra/compose/broker.yml',
  '-f',
  'examples/aico-stack/docker-compose.yml',
];
let repo: Repository;
let env: NodeJS.ProcessEnv;
let frontend: ZmqPeer;
const images: string[] = [backendImage];

async function compose(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('docker-compose', [...files, '--profile', 'dev', ...args], {
      cwd: root,
      env,
      maxBuffer: 32 * 1024 * 1024,
    });
    return stdout.trim();
  } catch (error) {
    const e = error as { stderr?: string };
    throw new Error(`docker-compose ${args.join(' ')} failed: ${e.stderr?.trim().slice(-2000)}`);
  }
}

const container = (service: string) => `${project}_${service}_1`;
const controlUrl = () => `http://127.0.0.1:${env.AICO_CONTROL_PORT}`;

async function backendVersion(): Promise<string | undefined> {
  const response = await fetch(`http://127.0.0.1:${env.AICO_BACKEND_PORT}/api/v1/health`).catch(
    () => undefined,
  );
  return response?.ok ? ((await response.json()) as { version: string }).version : undefined;
}

/** Publishes a sample backend `version` as a release, its image as verified blobs. */
async function publish(version: string, behaviour: 'healthy' | 'unhealthy' = 'healthy'): Promise<void> {
  const tag = `aico-example/backend:${version}-${id}`;
  await buildSampleBackend(tag, version, behaviour);
  const archive = join(await makeTempDir('stack-image'), 'backend.tar');
  await docker('save', '-o', archive, tag);
  await docker('rmi', '-f', tag);
  images.push(tag);
  await repo.addRelease({
    component: 'backend',
    version,
    channel: 'stable',
    notes: `sample ${version}`,
    artifacts: [],
    images: [{ service: 'backend', archive }],
  });
}

beforeAll(async () => {
  const dir = await makeTempDir('stack');
  await chmod(dir, 0o755); // the update server container reads the repository as user node
  repo = await initRepository(join(dir, 'repo'));
  // The update server reads repo.json and public/ as user node; keys/ stays the publisher's alone.
  await chmod(repo.dir, 0o755);
  await buildSampleBackend(backendImage, '1.0.0');
  env = {
    ...process.env,
    COMPOSE_PROJECT_NAME: project,
    AICO_DEV_REPO: repo.dir,
    AICO_UPDATE_SERVER_METADATA_URL: 'http://update-server:8443/metadata',
    AICO_UPDATE_SERVER_ALLOW_INSECURE_HTTP: 'true',
    AICO_TRUSTED_ROOT_FILE: repo.trustedRootPath,
    AICO_INSTALLED: 'backend=1.0.0',
    AICO_UPDATE_AUTO_DOWNLOAD: 'true',
    AICO_INSTALLER_SERVICES: `backend=${backend}`,
    AICO_INSTALLER_SOAK_SECONDS: '2',
    AICO_INSTALLER_HEALTH_TIMEOUT_SECONDS: '20',
    AICO_BACKEND_IMAGE: backendImage,
    AICO_BACKEND_CONTAINER: backend,
    AICO_BACKEND_PORT: String(await freePort()),
    AICO_BUS_PUB_PORT: String(await freePort()),
    AICO_BUS_SUB_PORT: String(await freePort()),
    AICO_CONTROL_PORT: String(await freePort()),
  };
  await run('bash', [resolve(root, 'infra/base-images.sh')], { cwd: root });
  await compose('build', '-q');
  await compose('up', '-d');
}, 600_000);

afterAll(async () => {
  frontend?.close();
  await compose('down', '-v', '--remove-orphans').catch(() => undefined);
  await docker('rmi', '-f', ...images).catch(() => undefined);
});

describe('the deployment', () => {
  it('comes up healthy, read-only, as non-root where it can', { timeout: 180_000 }, async () => {
    const services = ['redis', 'nats', 'update-server', 'checker', 'downloader', 'installer', 'bus-gateway'];
    let states: string[] = [];
    await waitUntil(
      async () => {
        states = await Promise.all(
          services.map(async (service) => {
            const health = await docker(
              'inspect',
              '--format',
              '{{.State.Health.Status}}',
              container(service),
            );
            return `${service}: ${health}`;
          }),
        );
        return states.every((state) => state.endsWith(': healthy'));
      },
      'every service to be healthy',
      150_000,
      1000,
    ).catch((error: Error) => {
      throw new Error(`${error.message} (${states.join(', ')})`);
    });
    for (const service of ['checker', 'downloader', 'installer', 'bus-gateway']) {
      const info = JSON.parse(await docker('inspect', container(service)))[0];
      expect(info.HostConfig.ReadonlyRootfs, service).toBe(true);
      expect(info.HostConfig.Init, service).toBe(true);
      expect(info.Config.User, service).toBe(service === 'installer' ? '0:0' : 'node');
    }
    await waitUntil(
      async () => (await fetch(`${controlUrl()}/readyz`).catch(() => undefined))?.status === 200,
      'the bus gateway to be ready',
      30_000,
      500,
    );
    expect(await backendVersion()).toBe('1.0.0');
  });

  it('updates the backend through the bus, rolls a broken release back, and compose keeps the update', {
    timeout: 600_000,
  }, async () => {
    frontend = new ZmqPeer(
      '127.0.0.1',
      Number(env.AICO_BUS_PUB_PORT),
      Number(env.AICO_BUS_SUB_PORT),
      AICO_BROKER_PUBLIC_KEY,
    );
    await frontend.settle(1000);
    const check = async () => {
      const correlationId = randomUUID();
      await frontend.send(
        'update.check.request',
        UpdateCheckRequestSchema,
        create(UpdateCheckRequestSchema),
        {
          correlation_id: correlationId,
          forced: 'true',
        },
      );
      return (await frontend.answer(correlationId, UpdateCheckResponseSchema, 60_000)).payload;
    };
    const install = async (updateId: string) => {
      const correlationId = randomUUID();
      const request = create(InstallUpdateRequestSchema, { updateId, autoRestart: true });
      await frontend.send('update.install.request', InstallUpdateRequestSchema, request, {
        correlation_id: correlationId,
      });
      return (await frontend.answer(correlationId, InstallUpdateResponseSchema, 60_000)).payload;
    };
    const count = (topic: string) => frontend.received.filter((m) => m.topic === topic).length;
    const nth = (topic: string, n: number) => frontend.received.filter((m) => m.topic === topic)[n - 1];
    const completion = async (n: number) => {
      await waitUntil(() => count('update.install.complete') >= n, `install completion ${n}`, 120_000);
      return unpackPayload(
        nth('update.install.complete', n)?.envelope as Envelope,
        InstallUpdateResponseSchema,
      );
    };

    // 1.1.0: published → check → available → downloaded → install request → installed.
    await publish('1.1.0');
    const checked = await check();
    expect(checked).toMatchObject({ updateAvailable: true });
    expect(checked.updateInfo?.updateId).toBe('backend-1.1.0');
    await waitUntil(() => count('update.available') >= 1, 'update.available', 60_000);
    await waitUntil(() => count('update.download.complete') >= 1, 'the 1.1.0 download', 120_000);
    expect(count('update.download.progress')).toBeGreaterThan(0);
    const accepted = await install('backend-1.1.0');
    expect(accepted, accepted.message).toMatchObject({
      success: true,
      status: InstallStatus.INSTALL_PENDING,
    });
    const installed = await completion(1);
    expect(installed, installed.message).toMatchObject({
      success: true,
      status: InstallStatus.INSTALL_COMPLETED,
    });
    expect(count('update.restart.scheduled')).toBeGreaterThan(0);
    expect(count('update.install.progress')).toBeGreaterThan(3);
    expect(await backendVersion()).toBe('1.1.0');

    // A broken 1.2.0: installed on request, fails its health gate, rolled back to 1.1.0.
    await publish('1.2.0', 'unhealthy');
    expect((await check()).updateInfo?.updateId).toBe('backend-1.2.0');
    await waitUntil(() => count('update.download.complete') >= 2, 'the 1.2.0 download', 120_000);
    expect(await install('backend-1.2.0')).toMatchObject({ success: true });
    const failure = await completion(2);
    expect(failure.success).toBe(false);
    expect(failure.message).toMatch(/rolled_back/);
    expect(await backendVersion()).toBe('1.1.0');
    const metrics = await docker(
      'exec',
      container('installer'),
      'node',
      '-e',
      "fetch('http://127.0.0.1:8083/metrics').then(r=>r.text()).then(t=>console.log(t))",
    );
    expect(metrics).toMatch(
      /aico_update_rollbacks_total\{component="backend",reason="HEALTH_GATE_FAILED"[^}]*\} 1/,
    );
    expect(metrics).toMatch(
      /aico_update_installed_version_info\{component="backend",version="1\.1\.0"[^}]*\} 1/,
    );

    // The operator runs `up -d` again: the backend keeps the installed version.
    await compose('up', '-d');
    await waitUntil(async () => (await backendVersion()) ?? false, 'the backend to answer', 30_000, 500);
    expect(await backendVersion()).toBe('1.1.0');
  });
});
