import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inboxPrefix, natsConfig, SERVICE_USERS, type ServiceUser } from '../../src/access.ts';
import { initSecrets } from '../../src/cli/init-secrets.ts';
import { DEVICES_KEY } from '../../src/devices.ts';
import { EventPublisher, ensureEventStream } from '../../src/nats.ts';
import { makeTempDir, type SpawnedServer, spawnNats, spawnRedis } from '../../src/testing/index.ts';
import { ExtraTopics, Queues, StateKeys, Subjects, Topics } from '../../src/topics.ts';

/*
 * Least privilege, on a real Redis and a real NATS configured exactly as the deployment's secrets service
 * configures them: what each service needs works, what it must not do is refused, and nobody without a
 * password gets anything but a Redis PING.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let secretsDir: string;
const passwords = { redis: {} as Record<ServiceUser, string>, nats: {} as Record<ServiceUser, string> };
const open: { close(): Promise<unknown> }[] = [];

beforeAll(async () => {
  secretsDir = await makeTempDir('secrets');
  const serviceDirs = Object.fromEntries(SERVICE_USERS.map((u) => [u, join(secretsDir, u)])) as Record<
    ServiceUser,
    string
  >;
  const first = await initSecrets({
    redisDir: join(secretsDir, 'redis'),
    natsDir: join(secretsDir, 'nats'),
    grafanaDir: join(secretsDir, 'grafana'),
    serviceDirs,
  });
  // A Redis and a NATS password per service, and Grafana's admin password.
  expect(first.made).toHaveLength(9);
  // Idempotent: a second `up` keeps every password.
  expect(
    (
      await initSecrets({
        redisDir: join(secretsDir, 'redis'),
        natsDir: join(secretsDir, 'nats'),
        serviceDirs,
      })
    ).made,
  ).toEqual([]);
  for (const user of SERVICE_USERS) {
    passwords.redis[user] = (await readFile(join(secretsDir, user, 'redis-password'), 'utf8')).trim();
    passwords.nats[user] = (await readFile(join(secretsDir, user, 'nats-password'), 'utf8')).trim();
  }
  // The deployment's NATS configuration, with this test's store folder.
  const conf = join(secretsDir, 'nats-test.conf');
  await writeFile(conf, natsConfig(passwords.nats, join(secretsDir, 'js')));
  [redis, nats] = await Promise.all([
    spawnRedis({ aclFile: join(secretsDir, 'redis', 'users.acl') }),
    spawnNats({ configFile: conf }),
  ]);
}, 30_000);

afterAll(async () => {
  for (const c of open.splice(0).reverse()) await c.close().catch(() => undefined);
  await Promise.all([redis?.stop(), nats?.stop()]);
});

function redisAs(user?: ServiceUser): Redis {
  const client = new Redis(redis.url, {
    maxRetriesPerRequest: null,
    ...(user ? { username: user, password: passwords.redis[user] } : {}),
  });
  open.push({ close: async () => client.disconnect() });
  return client;
}

async function natsAs(user: ServiceUser): Promise<NatsConnection> {
  const nc = await connect({
    servers: nats.url,
    user,
    pass: passwords.nats[user],
    inboxPrefix: inboxPrefix(user),
  });
  open.push({ close: () => nc.close() });
  return nc;
}

const refused = (promise: Promise<unknown>) =>
  promise.then(
    () => 'allowed',
    (error: Error) => error.message,
  );

describe('Redis: an ACL user per service', () => {
  it('without a password, only PING', async () => {
    const anonymous = redisAs();
    expect(await anonymous.ping()).toBe('PONG');
    expect(await refused(anonymous.set('x', 'y'))).toMatch(/NOPERM|NOAUTH/);
    expect(await refused(anonymous.hgetall(StateKeys.installed))).toMatch(/NOPERM|NOAUTH/);
  });

  it('the downloader records downloads and queues installs, but cannot set what is installed or schedule checks', async () => {
    const downloader = redisAs('downloader');
    await downloader.hset(StateKeys.downloaded, 'backend@1.1.0', '{}');
    expect(await downloader.hgetall(StateKeys.installed)).toEqual({});
    expect(await refused(downloader.hset(StateKeys.installed, 'backend', '0.0.1'))).toMatch(/NOPERM/);
    const installs = new Queue(Queues.install, { connection: downloader });
    await installs.add('install', { v: 1 }, { jobId: 'install-backend-1.1.0' });
    const checks = new Queue(Queues.check, { connection: downloader });
    expect(await refused(checks.add('check', {}))).toMatch(/NOPERM/);
    expect(await refused(downloader.set('aico-update:gateway:published:1', '1'))).toMatch(/NOPERM/);
  });

  it('the gateway reads state and marks its events, and writes nothing else', async () => {
    const gateway = redisAs('bus-gateway');
    await gateway.set('aico-update:gateway:published:1', '1');
    expect(await gateway.hgetall(StateKeys.downloaded)).toHaveProperty('backend@1.1.0');
    expect(await refused(gateway.hset(StateKeys.installed, 'backend', '9.9.9'))).toMatch(/NOPERM/);
    expect(await refused(new Queue(Queues.install, { connection: gateway }).add('install', {}))).toMatch(
      /NOPERM/,
    );
  });

  it('the installer owns the installed versions and the history', async () => {
    const installer = redisAs('installer');
    await installer.hset(StateKeys.installed, 'backend', '1.1.0');
    await installer.lpush(StateKeys.installHistory, '{}');
    expect(await refused(installer.hset(StateKeys.downloaded, 'backend@6.6.6', '{}'))).toMatch(/NOPERM/);
  });

  it('only the installer writes the settings and its holds; each service writes only its own decisions', async () => {
    const installer = redisAs('installer');
    await installer.set(StateKeys.settings, '{}');
    await installer.set(StateKeys.installerStatus, '{}');
    for (const user of ['checker', 'downloader', 'bus-gateway'] as const) {
      const other = redisAs(user);
      expect(await other.get(StateKeys.settings)).toBe('{}');
      expect(await refused(other.set(StateKeys.settings, '{"forged":1}')), user).toMatch(/NOPERM/);
      expect(await refused(other.set(StateKeys.installerStatus, '{}')), user).toMatch(/NOPERM/);
      expect(await refused(other.lpush(StateKeys.installHistory, '{}')), user).toMatch(/NOPERM/);
    }
    await redisAs('checker').lpush(StateKeys.checkerDecisions, '{}');
    expect(await refused(redisAs('checker').lpush(StateKeys.downloaderDecisions, '{}'))).toMatch(/NOPERM/);
    await redisAs('downloader').lpush(StateKeys.downloaderDecisions, '{}');
    // Devices: the gateway records them (it hears them); the others only read them.
    await redisAs('bus-gateway').hset(DEVICES_KEY, 'pc-1', '{}');
    for (const user of ['checker', 'downloader', 'installer'] as const) {
      expect(await redisAs(user).hget(DEVICES_KEY, 'pc-1')).toBe('{}');
      expect(await refused(redisAs(user).hset(DEVICES_KEY, 'pc-2', '{}')), user).toMatch(/NOPERM/);
    }
    expect(await refused(redisAs('bus-gateway').lpush(StateKeys.checkerDecisions, '{}'))).toMatch(/NOPERM/);
  });
});

describe('NATS: a user per service, with its subjects', () => {
  it('refuses a connection without credentials', async () => {
    expect(await refused(connect({ servers: nats.url }))).toMatch(/Authorization Violation/);
  });

  it('services publish their own events only; nobody else sends commands', async () => {
    const downloader = await natsAs('downloader');
    await ensureEventStream(downloader);
    await new EventPublisher(downloader).publish(Topics.downloadComplete, { v: 1 });
    const forged = await refused(new EventPublisher(downloader).publish(Topics.installComplete, { v: 1 }));
    expect(forged).toMatch(/Permissions Violation|timeout/i);
    const command = await refused(
      downloader.request(Subjects.command(Topics.installRequest), '{}', { timeout: 1000 }),
    );
    expect(command).toMatch(/Permissions Violation/);
  });

  it('only the installer serves installs: another user cannot join its queue group', async () => {
    const checker = await natsAs('checker');
    const errors: string[] = [];
    checker.subscribe(Subjects.command(Topics.installRequest), {
      queue: 'aico-update-installer',
      callback: (error) => {
        if (error) errors.push(error.message);
      },
    });
    await checker.flush();
    await new Promise((r) => setTimeout(r, 200));
    expect(errors.join()).toMatch(/Permissions Violation/);

    const installer = await natsAs('installer');
    installer.subscribe(Subjects.command(Topics.installRequest), {
      callback: (_e, m) => void m.respond('queued'),
    });
    await installer.flush();
    const gateway = await natsAs('bus-gateway');
    expect(
      (await gateway.request(Subjects.command(Topics.installRequest), '{}', { timeout: 2000 })).string(),
    ).toBe('queued');
  });

  it('no service but the gateway sends the operator’s commands', async () => {
    const commands = [
      ExtraTopics.installCancel,
      ExtraTopics.installPlan,
      ExtraTopics.releaseSkip,
      ExtraTopics.installResume,
      ExtraTopics.downloadRequest,
    ];
    for (const user of ['checker', 'downloader', 'installer'] as const) {
      const other = await natsAs(user);
      for (const topic of commands) {
        const asked = await refused(other.request(Subjects.command(topic), '{}', { timeout: 1000 }));
        expect(asked, `${user} → ${topic}`).toMatch(/Permissions Violation/);
      }
    }
  });

  it('only the installer announces settings and serves them; only the gateway asks; the downloader serves downloads', async () => {
    for (const user of ['checker', 'downloader', 'bus-gateway'] as const) {
      const other = await natsAs(user);
      const forged = await refused(new EventPublisher(other).publish(ExtraTopics.settings, { v: 1 }));
      expect(forged, user).toMatch(/Permissions Violation|timeout/i);
    }
    for (const user of ['checker', 'downloader'] as const) {
      const other = await natsAs(user);
      const asked = await refused(
        other.request(Subjects.command(ExtraTopics.settings), '{}', { timeout: 1000 }),
      );
      expect(asked, user).toMatch(/Permissions Violation/);
    }
    const checker = await natsAs('checker');
    const errors: string[] = [];
    checker.subscribe(Subjects.command(ExtraTopics.downloadRequest), {
      callback: (error) => {
        if (error) errors.push(error.message);
      },
    });
    await checker.flush();
    await new Promise((r) => setTimeout(r, 200));
    expect(errors.join()).toMatch(/Permissions Violation/);
    const downloader = await natsAs('downloader');
    downloader.subscribe(Subjects.command(ExtraTopics.downloadRequest), {
      callback: (_e, m) => void m.respond('queued'),
    });
    await downloader.flush();
    const gateway = await natsAs('bus-gateway');
    expect(
      (
        await gateway.request(Subjects.command(ExtraTopics.downloadRequest), '{}', { timeout: 2000 })
      ).string(),
    ).toBe('queued');
  });

  it('nobody can delete or purge the event stream', async () => {
    for (const user of ['bus-gateway', 'installer'] as const) {
      const jsm = await jetstreamManager(await natsAs(user));
      expect(await refused(jsm.streams.delete('AICO_UPDATE_EVENTS'))).toMatch(
        /Permissions Violation|timeout|no responders/i,
      );
      expect(await refused(jsm.streams.purge('AICO_UPDATE_EVENTS'))).toMatch(
        /Permissions Violation|timeout|no responders/i,
      );
    }
    // The stream is still there, with the downloader's event in it.
    const jsm = await jetstreamManager(await natsAs('checker'));
    expect((await jsm.streams.info('AICO_UPDATE_EVENTS')).state.messages).toBeGreaterThan(0);
  });
});
