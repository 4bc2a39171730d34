import { cp, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureEventStream, StateKeys, Subjects, Topics } from '@aico-update/shared';
import {
  makeTempDir,
  mountSmallDisk,
  type SpawnedServer,
  spawnNats,
  spawnRedis,
} from '@aico-update/shared/testing';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Backup } from '../../src/adapters/backup-store.ts';
import { DockerRuntime } from '../../src/adapters/docker-runtime.ts';
import { InstallFailed, installRelease, rollbackLastInstall } from '../../src/handlers/install-release.ts';
import { SampleDeployment } from '../support/deployment.ts';
import { testInstallDeps } from '../support/deps.ts';
import { lastOutcome, stageRelease } from '../support/stage.ts';

/*
 * Data backups on the real Docker Engine: the declared volume path and a hook (a "database dump" run
 * inside another container) are backed up before the swap and restored when the new version fails.
 */

let redis: SpawnedServer;
let nats: SpawnedServer;
let redisClient: Redis;
let nc: NatsConnection;
let dir: string;
let deployment: SampleDeployment;
const runtime = new DockerRuntime();
const mounts: (() => Promise<void>)[] = [];

beforeAll(async () => {
  [redis, nats] = await Promise.all([spawnRedis(), spawnNats()]);
  redisClient = new Redis(redis.url, { maxRetriesPerRequest: null });
  nc = await connect({ servers: nats.url });
  await ensureEventStream(nc);
});

afterAll(async () => {
  await nc.close();
  redisClient.disconnect();
  await Promise.all([redis.stop(), nats.stop()]);
});

beforeEach(async () => {
  await redisClient.flushall();
  await redisClient.hset(StateKeys.installed, 'backend', '1.0.0');
  dir = await makeTempDir('installer-data');
  deployment = await new SampleDeployment().start();
});

afterEach(async () => {
  await deployment.remove();
  for (const unmount of mounts.splice(0)) await unmount().catch(() => undefined);
});

/** Install deps with /data of the backend backed up, and a file in it worth keeping. */
async function backedUpDeps() {
  await deployment.exec(deployment.name, 'echo precious > /data/user.db');
  return testInstallDeps(
    { runtime, redis: redisClient, nc },
    {
      cache_dir: join(dir, 'cache'),
      state_dir: join(dir, 'state'),
      services: { backend: deployment.name },
      health_timeout_seconds: 8,
      soak_seconds: 1,
      prepare_timeout_seconds: 0.2,
      backup: { dir: join(dir, 'backups'), paths: { backend: '/data' } },
    },
  );
}

/** A copy of a backup under another id, with some of its description changed. */
async function copyBackup(
  deps: Awaited<ReturnType<typeof testInstallDeps>>,
  id: string,
  newId: string,
  change: Partial<Backup>,
): Promise<string> {
  await cp(deps.backups.folder(id), deps.backups.folder(newId), { recursive: true });
  const backup = (await deps.backups.read(id)) as Backup;
  await writeFile(
    join(deps.backups.folder(newId), 'backup.json'),
    JSON.stringify({ ...backup, ...change, id: newId }),
  );
  return newId;
}

describe('data backup and restore', () => {
  it('a failed release that changed the data is rolled back with the volume and the hooked database restored', async () => {
    const db = await deployment.sidecar('db', '-v', `${deployment.volume}-db:/var/db`, deployment.tag);
    await deployment.exec(db, 'echo schema-1 > /var/db/state');
    await deployment.exec(deployment.name, 'echo precious > /data/user.db');
    const deps = await testInstallDeps(
      { runtime, redis: redisClient, nc },
      {
        cache_dir: join(dir, 'cache'),
        state_dir: join(dir, 'state'),
        services: { backend: deployment.name },
        health_timeout_seconds: 8,
        soak_seconds: 1,
        prepare_timeout_seconds: 0.2,
        backup: {
          dir: join(dir, 'backups'),
          paths: { backend: '/data' },
          hooks: [
            {
              container: db,
              file: '/tmp/db.dump',
              backup: ['/bin/sh', '-c', 'cp /var/db/state /tmp/db.dump'],
              restore: ['/bin/sh', '-c', 'cp /tmp/db.dump /var/db/state'],
            },
          ],
        },
      },
    );
    const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
      { service: 'backend', tag: await deployment.image('1.1.0', 'unhealthy') },
    ]);
    // While the new version runs (its health gate), it "migrates" the database.
    const gate = nc.subscribe(Subjects.event(Topics.installProgress), {
      callback: (_e, m) => {
        const progress = m.json<{ step: string; status: string }>();
        if (progress.step === 'health-gate' && progress.status === 'started')
          void deployment.exec(db, 'echo schema-2 > /var/db/state');
      },
    });
    const error = await installRelease(deps, deps.seal.seal(job)).catch((e: unknown) => e);
    gate.unsubscribe();

    expect(error).toBeInstanceOf(InstallFailed);
    expect(error).toMatchObject({ code: 'HEALTH_GATE_FAILED', rolledBack: true });
    expect(await deployment.version()).toBe('1.0.0');
    // The new version's writes are gone; the data the old one had is back, then it started again.
    const files = (await deployment.exec(deployment.name, 'ls /data')).split('\n');
    expect(files).not.toContain('written-by-1.1.0');
    expect(files).toContain('written-by-1.0.0');
    expect(await deployment.exec(deployment.name, 'cat /data/user.db')).toBe('precious');
    expect(await deployment.exec(deployment.name, 'cat /data/log')).toBe('started 1.0.0\nstarted 1.0.0');
    expect(await deployment.exec(db, 'cat /var/db/state')).toBe('schema-1');
    const entry = await lastOutcome(redisClient);
    expect(entry).toMatchObject({ version: '1.1.0', outcome: 'rolled_back' });
    const backups = await deps.backups.list();
    expect(backups).toHaveLength(1);
    expect(backups[0]).toMatchObject({ component: 'backend', from_version: '1.0.0', to_version: '1.1.0' });
    expect(backups[0]?.entries.map((e) => e.path)).toEqual(['/data']);
  });

  it("an operator's rollback restores the backup this install took; a backup of another version is refused", async () => {
    const deps = await backedUpDeps();
    const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
      { service: 'backend', tag: await deployment.image('1.1.0') },
    ]);
    const installed = await installRelease(deps, deps.seal.seal(job));
    expect(installed.backup_id).toMatch(/^backend-1\.0\.0-/);
    await deployment.exec(deployment.name, 'echo later > /data/written-after-the-install');

    // A backup of another version is not restored into 1.0.0 (its data may be newer than it reads).
    const foreign = await copyBackup(deps, installed.backup_id as string, 'backend-0.9.0-foreign', {
      from_version: '0.9.0',
    });
    await expect(
      rollbackLastInstall(deps, deps.seal.sealRollback({ v: 1, component: 'backend', backup_id: foreign })),
    ).rejects.toMatchObject({ code: 'BACKUP_NOT_FOR_VERSION' });
    expect(await deployment.version()).toBe('1.1.0');

    // Without a backup named: the one the install took.
    const rolledBack = await rollbackLastInstall(
      deps,
      deps.seal.sealRollback({ v: 1, component: 'backend' }),
    );
    expect(rolledBack).toMatchObject({ outcome: 'rolled_back', backup_id: installed.backup_id });
    expect(await deployment.version()).toBe('1.0.0');
    const files = (await deployment.exec(deployment.name, 'ls -a /data')).split('\n');
    expect(files).not.toContain('written-by-1.1.0');
    expect(files).not.toContain('written-after-the-install');
    expect(files.filter((f) => f.startsWith('.aico-'))).toEqual([]); // no staging left behind
    expect(await deployment.exec(deployment.name, 'cat /data/user.db')).toBe('precious');
  });

  it.each([
    ['whose hash no longer matches (refused before anything is touched)', true],
    ['of a backup taken before archives were hashed (the extraction fails in its staging folder)', false],
  ])(
    'a restore from an archive cut short, %s, leaves the data in place and the service running on it',
    async (_what, hashed) => {
      const deps = await backedUpDeps();
      const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
        { service: 'backend', tag: await deployment.image('1.1.0') },
      ]);
      const { backup_id } = await installRelease(deps, deps.seal.seal(job));
      const backup = (await deps.backups.read(backup_id as string)) as Backup;
      const tar = join(deps.backups.folder(backup.id), backup.entries[0]?.file as string);
      await truncate(tar, Math.floor((await stat(tar)).size / 2));
      if (!hashed) {
        const meta = join(deps.backups.folder(backup.id), 'backup.json');
        await writeFile(
          meta,
          JSON.stringify({ ...backup, entries: backup.entries.map(({ sha256: _s, ...e }) => e) }),
        );
      }
      const error = await rollbackLastInstall(
        deps,
        deps.seal.sealRollback({ v: 1, component: 'backend' }),
      ).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'RESTORE_FAILED' });
      expect((error as Error).message).toMatch(hashed ? /cut short or changed/ : /its data was not touched/);
      // The newer version runs, healthy, on its own data, untouched.
      expect(await deployment.version()).toBe('1.1.0');
      expect((await deployment.inspect()).State).toMatchObject({
        Running: true,
        Health: { Status: 'healthy' },
      });
      const files = (await deployment.exec(deployment.name, 'ls -a /data')).split('\n');
      expect(files).toContain('written-by-1.1.0');
      expect(await deployment.exec(deployment.name, 'cat /data/user.db')).toBe('precious');
      expect(files.filter((f) => f.startsWith('.aico-'))).toEqual([]);
    },
  );

  it.each([
    // Less free than the headroom: the disk check refuses before any work.
    { tmpfs: '1m', dataMiB: 3, message: /not enough free disk in .*small \(installer\.backup\.dir\)/ },
    // Room for the estimate but not for the data: the backup itself hits ENOSPC.
    { tmpfs: '66m', dataMiB: 72, message: /not enough free space in .*small \(installer\.backup\.dir\)/ },
  ])(
    'a backup that does not fit on its disk ($tmpfs) stops the install before anything changes, and leaves no partial backup',
    async ({ tmpfs, dataMiB, message }) => {
      const backups = join(dir, 'small');
      mounts.push(await mountSmallDisk(backups, tmpfs));
      await deployment.exec(deployment.name, `head -c ${dataMiB * 1024 * 1024} /dev/urandom > /data/big.bin`);
      const before = await deployment.inspect();
      const deps = await testInstallDeps(
        { runtime, redis: redisClient, nc },
        {
          cache_dir: join(dir, 'cache'),
          state_dir: join(dir, 'state'),
          services: { backend: deployment.name },
          prepare_timeout_seconds: 0.2,
          backup: { dir: backups, paths: { backend: '/data' } },
        },
      );
      const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
        { service: 'backend', tag: await deployment.image('1.1.0') },
      ]);
      const error = await installRelease(deps, deps.seal.seal(job)).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'DISK_FULL', rolledBack: false });
      expect((error as Error).message).toMatch(message);
      expect((error as Error).message).toMatch(/Nothing was changed/);
      const after = await deployment.inspect();
      expect(after.Id).toBe(before.Id);
      expect(after.State.StartedAt).toBe(before.State.StartedAt);
      expect(await deployment.version()).toBe('1.0.0');
      expect(await readdir(backups)).toEqual([]);
      expect(await redisClient.hget(StateKeys.installed, 'backend')).toBe('1.0.0');
    },
  );

  it('a declared path that is not on a mount is refused before anything changes', async () => {
    const deps = await testInstallDeps(
      { runtime, redis: redisClient, nc },
      {
        cache_dir: join(dir, 'cache'),
        state_dir: join(dir, 'state'),
        services: { backend: deployment.name },
        prepare_timeout_seconds: 0.2,
        backup: { dir: join(dir, 'backups'), paths: { backend: '/www' } },
      },
    );
    const job = await stageRelease(join(dir, 'cache'), 'backend', '1.1.0', [
      { service: 'backend', tag: await deployment.image('1.1.0') },
    ]);
    await expect(installRelease(deps, deps.seal.seal(job))).rejects.toMatchObject({
      code: 'BACKUP_PATH_NOT_MOUNTED',
      message: expect.stringMatching(/\/www \(installer\.backup\.paths\.backend\)/),
    });
    expect(await deployment.version()).toBe('1.0.0');
  });
});
