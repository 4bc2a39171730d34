import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  create,
  type Envelope,
  InstallUpdateRequestSchema,
  InstallUpdateResponseSchema,
  UpdateCheckRequestSchema,
  UpdateCheckResponseSchema,
  unpackPayload,
} from '@aico-update/aico-bus';
import { AICO_BROKER_PUBLIC_KEY } from '@aico-update/bus-gateway';
import { docker, freePort, makeTempDir, waitUntil } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curveKeyPair } from 'zeromq';
import { ROOT, Stack } from '../../scripts/stack.ts';
import { ZmqPeer } from '../../services/bus-gateway/test/support/peer.ts';

/*
 * The upgrade an operator makes: a deployment made with the version before per-service credentials (its
 * compose file and images, built from that commit), with real state in its volumes (a backend installed
 * through the bus), then `docker compose up -d` with this version. It must get its secrets with no step
 * from the operator and keep its state: the installed version, the history, the event stream.
 */

/** The last commit before Redis and NATS had users: what existing deployments run. */
const BEFORE_CREDENTIALS = '07efe5d';
const run = promisify(execFile);

describe('upgrading a deployment made before per-service credentials', () => {
  const id = randomBytes(3).toString('hex');
  const frontendKeys = curveKeyPair();
  let old: Stack;
  const peers: ZmqPeer[] = [];

  beforeAll(async () => {
    const oldRoot = await makeTempDir('before-credentials');
    const archive = join(oldRoot, 'source.tar');
    await run('git', ['archive', '-o', archive, BEFORE_CREDENTIALS], { cwd: ROOT });
    await run('tar', ['-xf', archive, '-C', oldRoot]);
    old = await Stack.up({
      project: `aicoupg${id}`,
      compose: 'v2',
      repoDir: join(await makeTempDir('upgrade'), 'repo'),
      ports: {
        control: await freePort(),
        busPub: await freePort(),
        busSub: await freePort(),
        backend: await freePort(),
        prometheus: await freePort(),
      },
      backend: { container: `aico-backend-upg${id}`, image: `aico-example/backend:current-upg${id}` },
      frontendPublicKey: frontendKeys.publicKey,
      root: oldRoot,
      imageTag: 'before-credentials',
    });
  }, 900_000);

  afterAll(async () => {
    for (const peer of peers) peer.close();
    await old?.from(ROOT, 'local').down();
    await docker(
      'rmi',
      '-f',
      ...['checker', 'downloader', 'installer', 'bus-gateway', 'update-server'].map(
        (s) => `aico-update/${s}:before-credentials`,
      ),
    ).catch(() => undefined);
  });

  const askFor = async (
    peer: ZmqPeer,
    topic: string,
    schema: typeof UpdateCheckRequestSchema | typeof InstallUpdateRequestSchema,
    message: never,
  ) => {
    const correlationId = randomUUID();
    await peer.send(topic, schema, message, { correlation_id: correlationId, forced: 'true' });
    return correlationId;
  };

  it('gets its secrets on the next up -d and keeps its state', { timeout: 900_000 }, async () => {
    await old.healthy();
    // State, made the way the old version makes it: 1.1.0 found, downloaded and installed through the bus.
    const before = new ZmqPeer(
      '127.0.0.1',
      old.options.ports.busPub,
      old.options.ports.busSub,
      AICO_BROKER_PUBLIC_KEY,
    );
    peers.push(before);
    await before.settle(1000);
    await old.publish('1.1.0');
    const checkId = await askFor(
      before,
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema) as never,
    );
    expect((await before.answer(checkId, UpdateCheckResponseSchema, 60_000)).payload.updateAvailable).toBe(
      true,
    );
    await waitUntil(
      () => before.received.some((m) => m.topic === 'update.download.complete'),
      'the download',
      120_000,
    );
    const installId = await askFor(
      before,
      'update.install.request',
      InstallUpdateRequestSchema,
      create(InstallUpdateRequestSchema, { updateId: 'backend-1.1.0', autoRestart: true }) as never,
    );
    expect((await before.answer(installId, InstallUpdateResponseSchema, 60_000)).payload.success).toBe(true);
    const completed = await waitUntil(
      () => before.received.find((m) => m.topic === 'update.install.complete'),
      'the install',
      120_000,
    );
    expect(unpackPayload(completed.envelope as Envelope, InstallUpdateResponseSchema).success).toBe(true);
    expect(await old.backendVersion()).toBe('1.1.0');

    // The upgrade: the same project and volumes, this version's compose file and images.
    const upgraded = old.from(ROOT, 'local');
    await upgraded.compose('build', '-q');
    await upgraded.compose('up', '-d');
    await upgraded.healthy();

    // Secrets made with no step from the operator: Redis and NATS now refuse anonymous clients.
    const anonymous = await docker(
      'run',
      '--rm',
      '--network',
      `${upgraded.options.project}_core`,
      'redis:7-bookworm',
      'redis-cli',
      '-h',
      'redis',
      'hset',
      'aico-update:installed',
      'backend',
      '0.0.1',
    ).catch((e: Error) => e.message);
    expect(anonymous).toMatch(/NOPERM|NOAUTH/);
    // State kept: what is installed, the history, and the backend itself.
    expect(await upgraded.backendVersion()).toBe('1.1.0');
    const headers = await upgraded.controlHeaders();
    const status = await (await fetch(`${upgraded.controlUrl}/api/v1/status`, { headers })).json();
    expect(status).toMatchObject({ installed: { backend: '1.1.0' } });
    const history = (await (await fetch(`${upgraded.controlUrl}/api/v1/history`, { headers })).json()) as {
      history: unknown[];
    };
    expect(history.history).toEqual(
      expect.arrayContaining([expect.objectContaining({ version: '1.1.0', outcome: 'installed' })]),
    );
    // And the bus works through the upgraded services, with the broker's own key now.
    const after = new ZmqPeer(
      '127.0.0.1',
      upgraded.options.ports.busPub,
      upgraded.options.ports.busSub,
      await upgraded.brokerPublicKey(),
      frontendKeys,
    );
    peers.push(after);
    await after.settle(1000);
    const again = await askFor(
      after,
      'update.check.request',
      UpdateCheckRequestSchema,
      create(UpdateCheckRequestSchema) as never,
    );
    const answer = (await after.answer(again, UpdateCheckResponseSchema, 60_000)).payload;
    expect(answer.updateAvailable).toBe(false);
    expect(answer.updateMessage).toMatch(/1\.1\.0 is up to date/);
  });
});
