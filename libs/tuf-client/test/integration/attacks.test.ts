import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKey, type KeyFile, signerFor } from '@aico-update/release';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { releaseTargetPath } from '@aico-update/shared';
import { Metadata, MetadataKind } from '@tufjs/models';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type ClientUnderTest,
  clientFor,
  folderState,
  refresh,
  rejection,
  trustedVersions,
} from '../support/client.ts';

/*
 * The attacks of TUF-NOTES.md against a repository served over real HTTPS. For each: the client rejects
 * it, classifies it, keeps the failing role and every role after it as they were (byte for byte where
 * nothing before it changed), installs/caches nothing, and works again once the cause is gone.
 */

let t: TestRepository;
let c: ClientUnderTest;

beforeEach(async () => {
  t = await startTestRepository({ keyCounts: { targets: 2 }, thresholds: { targets: 2 } });
  await t.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  c = clientFor(t);
  await refresh(c);
});

afterEach(async () => {
  await c.fetcher.close();
  await t.close();
});

async function expectRejectedAndStateKept(code: string, kind = 'attack'): Promise<void> {
  const before = await folderState(c.metadataDir);
  const error = await rejection(refresh(c));
  expect({ code: error.code, kind: error.kind }).toEqual({ code, kind });
  expect(await folderState(c.metadataDir)).toEqual(before);
}

function servedPath(target: string, sha256: string): string {
  const slash = target.lastIndexOf('/');
  return `/targets/${target.slice(0, slash)}/${sha256}.${target.slice(slash + 1)}`;
}

async function signedFile(kind: MetadataKind, signed: object, keys: KeyFile[]): Promise<string> {
  const metadata = Metadata.fromJSON(kind as MetadataKind.Root, { signed, signatures: [] } as never);
  for (const key of keys) metadata.sign(signerFor(key), true);
  return JSON.stringify(metadata.toJSON());
}

describe('TUF attacks are rejected over HTTPS', () => {
  it('arbitrary software: a tampered or swapped target is refused and nothing is cached', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    const targets = await t.repo.readTargets();
    const entry = targets.targets[releaseTargetPath('backend', '1.1.0')]!;
    const url = servedPath(releaseTargetPath('backend', '1.1.0'), entry.hashes.sha256!);
    const genuine = await readFile(join(t.repo.targetsDir, url.replace('/targets/', '')), 'utf8');
    const oldEntry = targets.targets[releaseTargetPath('backend', '1.0.0')]!;
    const older = await readFile(
      join(
        t.repo.targetsDir,
        servedPath(releaseTargetPath('backend', '1.0.0'), oldEntry.hashes.sha256!).replace('/targets/', ''),
      ),
    );

    for (const body of [genuine.replace('1.1.0', '6.6.6'), older]) {
      t.faults.clear();
      t.faults.add(url, { kind: 'replace', body });
      const error = await rejection(
        c.client.session(async (s) => s.fetchTarget(s.targets.get(releaseTargetPath('backend', '1.1.0'))!)),
      );
      expect(error.kind).toBe('attack');
      expect(['TUF_HASH_MISMATCH', 'TUF_LENGTH_MISMATCH', 'TUF_ENDLESS_DATA']).toContain(error.code);
      expect(await folderState(c.targetsDir)).toEqual({});
    }

    t.faults.clear();
    const file = await c.client.session(async (s) =>
      s.fetchTarget(s.targets.get(releaseTargetPath('backend', '1.1.0'))!),
    );
    expect(await readFile(file, 'utf8')).toBe(genuine);
  });

  it('rollback: an older timestamp than the trusted one is refused', async () => {
    const oldTimestamp = await readFile(join(t.repo.metadataDir, 'timestamp.json'));
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    await refresh(c);
    t.faults.add('/metadata/timestamp.json', { kind: 'replace', body: oldTimestamp });
    await expectRejectedAndStateKept('TUF_ROLLBACK');
    t.faults.clear();
    const published = await t.repo.readTimestamp();
    await expect(refresh(c)).resolves.toMatchObject({ timestamp: published.version });
  });

  it('freeze: expired metadata is refused until the publisher re-signs it', async () => {
    await t.repo.refresh({ expiresAt: { timestamp: '2020-01-01T00:00:00Z' } });
    await expectRejectedAndStateKept('TUF_EXPIRED', 'expired');
    await t.repo.refresh();
    await expect(refresh(c)).resolves.toBeDefined();
  });

  it('mix-and-match: an old snapshot served under the current version is refused', async () => {
    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    const timestamp = await t.repo.readTimestamp();
    const current = (timestamp.meta as Record<string, { version: number }>)['snapshot.json']!.version;
    const old = await readFile(join(t.repo.metadataDir, `${current - 1}.snapshot.json`));
    t.faults.add(`/metadata/${current}.snapshot.json`, { kind: 'replace', body: old });
    // The timestamp was verified before the snapshot failed: kept (TUF 5.4.5); the snapshot is not.
    const before = await trustedVersions(c.metadataDir);
    expect(await rejection(refresh(c))).toMatchObject({ code: 'TUF_HASH_MISMATCH', kind: 'attack' });
    expect(await trustedVersions(c.metadataDir)).toEqual({ ...before, timestamp: timestamp.version });
    t.faults.clear();
    await expect(refresh(c)).resolves.toMatchObject({ snapshot: current });
  });

  it('endless data: oversized metadata and an oversized target are cut off', async () => {
    t.faults.add('/metadata/timestamp.json', { kind: 'append', extraBytes: 32 * 1024 });
    await expectRejectedAndStateKept('TUF_ENDLESS_DATA');
    t.faults.clear();

    await t.publish({ component: 'backend', version: '1.1.0', channel: 'stable' });
    const entry = (await t.repo.readTargets()).targets[releaseTargetPath('backend', '1.1.0')]!;
    t.faults.add(servedPath(releaseTargetPath('backend', '1.1.0'), entry.hashes.sha256!), {
      kind: 'append',
      extraBytes: 1,
    });
    const error = await rejection(
      c.client.session(async (s) => s.fetchTarget(s.targets.get(releaseTargetPath('backend', '1.1.0'))!)),
    );
    expect(error.code).toBe('TUF_ENDLESS_DATA');
    expect(await folderState(c.targetsDir)).toEqual({});
  });

  it('key compromise below threshold: too few signatures, or an unknown key, are refused', async () => {
    const [oneTargetsKey] = await t.repo.signingKeys('targets');
    await t.repo.refresh({ targets: true, signWith: { targets: [oneTargetsKey!] } });
    // The new timestamp and snapshot are verified and kept (TUF 5.4.5, 5.5.7); the targets are not.
    const before = await trustedVersions(c.metadataDir);
    const error = await rejection(refresh(c));
    expect({ code: error.code, kind: error.kind }).toEqual({ code: 'TUF_BAD_SIGNATURE', kind: 'attack' });
    const published = await t.repo.readTimestamp();
    expect(await trustedVersions(c.metadataDir)).toEqual({
      ...before,
      timestamp: published.version,
      snapshot: (before.snapshot as number) + 1,
    });

    await t.repo.refresh({ targets: true, signWith: { timestamp: [generateKey()] } });
    await expectRejectedAndStateKept('TUF_BAD_SIGNATURE');

    await t.repo.refresh({ targets: true });
    await expect(refresh(c)).resolves.toBeDefined();
  });

  it('fast-forward: after a timestamp key rotation the client recovers from a compromised high version', async () => {
    // The attacker holds the timestamp key and pushes the client to version 1000.
    const [timestampKey] = await t.repo.signingKeys('timestamp');
    const legit = await t.repo.readTimestamp();
    const forged = await signedFile(MetadataKind.Timestamp, { ...legit, version: 1000 }, [timestampKey!]);
    t.faults.add('/metadata/timestamp.json', { kind: 'replace', body: forged });
    await expect(refresh(c)).resolves.toMatchObject({ timestamp: 1000 });
    t.faults.clear();

    // Until the publisher rotates the key, the legitimate (lower) timestamp looks like a rollback.
    await expectRejectedAndStateKept('TUF_ROLLBACK');
    await t.repo.rotate('timestamp');
    await expect(refresh(c)).resolves.toMatchObject({ root: 2, timestamp: legit.version + 1 });
  });

  it('slow retrieval: a stalled body fails at the idle timeout instead of hanging', async () => {
    t.faults.add('/metadata/timestamp.json', { kind: 'stall', afterBytes: 10 });
    const started = Date.now();
    await expectRejectedAndStateKept('TUF_SLOW_RETRIEVAL', 'unreachable');
    expect(Date.now() - started).toBeLessThan(5000);
    t.faults.clear();
    await expect(refresh(c)).resolves.toBeDefined();
  });
});
