import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKey } from '@aico-update/release';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { releaseTargetPath } from '@aico-update/shared';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DirectoryFetcher, mirrorUrl, TufClient } from '../../src/index.ts';
import {
  type ClientUnderTest,
  clientFor,
  folderState,
  refresh,
  rejection,
  trustedVersions,
} from '../support/client.ts';

/*
 * What the client keeps, as the TUF specification's client workflow says (5.3.8, 5.4.5, 5.5.7, 5.6.7):
 * every role the moment it is verified, so a refresh that fails at a role keeps every role verified
 * before it, and nothing of the failing role. A new root is kept even when it then turns out expired
 * (5.3.10 checks expiry after persisting). Roots are kept in a history; a corrupt root.json is restored
 * from the newest one, never from the older shipped root.
 */

let t: TestRepository;
let c: ClientUnderTest;

beforeEach(async () => {
  t = await startTestRepository();
  await t.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  c = clientFor(t);
  await refresh(c);
});

afterEach(async () => {
  await c.fetcher.close();
  await t.close();
});

const versionsOf = async () => {
  const snapshot = await t.repo.readSnapshot();
  const targets = await t.repo.readTargets();
  return {
    root: await t.repo.rootVersion(),
    timestamp: (await t.repo.readTimestamp()).version,
    snapshot: snapshot.version,
    targets: targets.version,
  };
};

describe('a refresh that fails at one role keeps every role verified before it', () => {
  it('root: a new root below its own threshold is refused and nothing changes', async () => {
    const before = await folderState(c.metadataDir);
    // Signed by the old root key and an unknown one, not by the new root's own key.
    await t.repo.rotate('root', { signWith: { root: [generateKey()] } });
    const error = await rejection(refresh(c));
    expect(error).toMatchObject({ code: 'TUF_BAD_SIGNATURE', kind: 'attack' });
    expect(await folderState(c.metadataDir)).toEqual(before);
  });

  it('timestamp: the new root is kept, the timestamp stays', async () => {
    const before = await trustedVersions(c.metadataDir);
    await t.repo.rotate('root');
    await t.repo.refresh({ signWith: { timestamp: [generateKey()] } });
    const error = await rejection(refresh(c));
    expect(error).toMatchObject({ code: 'TUF_BAD_SIGNATURE' });
    expect(await trustedVersions(c.metadataDir)).toEqual({ ...before, root: 2 });
    expect(await readdir(join(c.metadataDir, 'root_history'))).toEqual(['1.root.json', '2.root.json']);
  });

  it('snapshot: the new root and timestamp are kept, the snapshot and targets stay', async () => {
    const before = await trustedVersions(c.metadataDir);
    await t.repo.rotate('root');
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    await t.repo.refresh({ signWith: { snapshot: [generateKey()] } });
    const published = await versionsOf();
    const error = await rejection(refresh(c));
    expect(error).toMatchObject({ code: 'TUF_BAD_SIGNATURE' });
    expect(await trustedVersions(c.metadataDir)).toEqual({
      ...before,
      root: 2,
      timestamp: published.timestamp,
    });
  });

  it('targets: root, timestamp and snapshot are kept, the targets stay', async () => {
    const before = await trustedVersions(c.metadataDir);
    await t.repo.rotate('root');
    await t.repo.refresh({ targets: true, signWith: { targets: [generateKey()] } });
    const published = await versionsOf();
    const error = await rejection(refresh(c));
    expect(error).toMatchObject({ code: 'TUF_BAD_SIGNATURE' });
    expect(await trustedVersions(c.metadataDir)).toEqual({
      root: 2,
      timestamp: published.timestamp,
      snapshot: published.snapshot,
      targets: before.targets,
    });
    // And once the publisher signs properly, the client moves on from there.
    await t.repo.refresh({ targets: true });
    await expect(refresh(c)).resolves.toMatchObject(await versionsOf());
  });

  it('an expired new root is kept (and the refresh fails as expired)', async () => {
    await t.repo.rotate('root', { expiresAt: { root: '2020-01-01T00:00:00Z' } });
    const error = await rejection(refresh(c));
    expect(error).toMatchObject({ code: 'TUF_EXPIRED', kind: 'expired' });
    expect((await trustedVersions(c.metadataDir)).root).toBe(2);
  });
});

describe('the trusted root survives a corrupt local copy', () => {
  it('after a rotation, a corrupt root.json is restored from the history (not re-seeded to v1)', async () => {
    await t.repo.rotate('root');
    await refresh(c);
    await writeFile(join(c.metadataDir, 'root.json'), '{ not json');
    await expect(refresh(c)).resolves.toMatchObject({ root: 2 });
    expect((await trustedVersions(c.metadataDir)).root).toBe(2);
  });

  it('fails closed when the newest root of the history is corrupt too', async () => {
    await t.repo.rotate('root');
    await refresh(c);
    await writeFile(join(c.metadataDir, 'root.json'), '{ not json');
    await writeFile(join(c.metadataDir, 'root_history', '2.root.json'), 'garbage');
    const error = await rejection(refresh(c));
    expect(error).toMatchObject({ code: 'TUF_LOCAL_STATE', kind: 'local' });
    expect(error.message).toMatch(/refusing to fall back to an older root/);
    // The shipped v1 was not brought back.
    expect(await readFile(join(c.metadataDir, 'root.json'), 'utf8')).toBe('{ not json');
  });

  it('a corrupt root.json without a history is refused too; an emptied folder starts from the shipped root', async () => {
    await rm(join(c.metadataDir, 'root_history'), { recursive: true });
    await writeFile(join(c.metadataDir, 'root.json'), '{ not json');
    expect(await rejection(refresh(c))).toMatchObject({ code: 'TUF_LOCAL_STATE' });
    await rm(c.metadataDir, { recursive: true });
    await expect(refresh(c)).resolves.toMatchObject({ root: 1 });
  });
});

describe('a mirror of the verified metadata', () => {
  const mirrorClient = (name: string) => {
    const stateDir = join(t.workDir, name);
    const mirrorDir = join(t.workDir, 'mirror');
    return new TufClient({
      metadataDir: join(stateDir, 'metadata'),
      workDir: stateDir,
      trustedRootFile: t.repo.trustedRootPath,
      metadataUrl: mirrorUrl(mirrorDir),
      targetsUrl: mirrorUrl(join(t.workDir, 'no-targets')),
      targetsDir: join(stateDir, 'targets'),
      fetcher: new DirectoryFetcher({ root: mirrorDir, tmpDir: join(stateDir, 'tmp') }),
    });
  };
  const exporting = () => clientFor(t, 'exporter', {});

  it('lets a client without the network verify what another client verified, root rotations included', async () => {
    const exporter = exporting();
    const withMirror = new TufClient({
      ...optionsOf(exporter),
      mirrorDir: join(t.workDir, 'mirror'),
    });
    await t.repo.rotate('root');
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    await withMirror.session(async () => undefined);
    const reader = mirrorClient('reader');
    const seen = await reader.session(async (s) => ({
      versions: s.versions,
      targets: [...s.targets.keys()],
    }));
    expect(seen.versions).toEqual(await versionsOf());
    expect(seen.targets).toContain(releaseTargetPath('backend', '1.1.0'));
    await exporter.fetcher.close();
  });

  it('a forged file in the mirror is refused by the reader, whose trusted state stays', async () => {
    const exporter = exporting();
    const withMirror = new TufClient({ ...optionsOf(exporter), mirrorDir: join(t.workDir, 'mirror') });
    await withMirror.session(async () => undefined);
    const reader = mirrorClient('reader');
    await reader.session(async () => undefined);
    const readerDir = join(t.workDir, 'reader', 'metadata');
    const before = await folderState(readerDir);
    const mirror = join(t.workDir, 'mirror');
    const timestamp = JSON.parse(await readFile(join(mirror, 'timestamp.json'), 'utf8'));
    timestamp.signed.version += 10;
    await writeFile(join(mirror, 'timestamp.json'), JSON.stringify(timestamp));
    expect(await rejection(reader.session(async () => undefined))).toMatchObject({
      code: 'TUF_BAD_SIGNATURE',
    });
    expect(await folderState(readerDir)).toEqual(before);
    await exporter.fetcher.close();
  });
});

function optionsOf(c: ClientUnderTest) {
  return {
    metadataDir: c.metadataDir,
    workDir: join(c.metadataDir, '..'),
    trustedRootFile: t.repo.trustedRootPath,
    metadataUrl: t.metadataUrl,
    targetsUrl: t.targetsUrl,
    targetsDir: c.targetsDir,
    fetcher: c.fetcher,
  };
}
