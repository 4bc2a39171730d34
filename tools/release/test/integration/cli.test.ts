import { execFile } from 'node:child_process';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { makeTempDir } from '@aico-update/shared/testing';
import { Updater } from 'tuf-js';
import { Agent, getGlobalDispatcher, setGlobalDispatcher } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRepository, serveRepository } from '../../src/index.ts';

const run = promisify(execFile);
const cli = resolve(import.meta.dirname, '../../bin/aico-release');

async function aicoRelease(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

let dir: string;
let repoDir: string;
let artifact: string;

beforeEach(async () => {
  dir = await makeTempDir('release-cli');
  repoDir = join(dir, 'repo');
  artifact = join(dir, 'backend.tar');
  await writeFile(artifact, 'image bytes');
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A stock tuf-js client with its default fetcher (not ours): what any TUF client makes of the repository. */
async function stockTufJsClient(metadataUrl: string) {
  const metadataDir = await makeTempDir('tufjs');
  await writeFile(
    join(metadataDir, 'root.json'),
    await readFile(join(repoDir, 'public/metadata/1.root.json')),
  );
  return new Updater({ metadataDir, metadataBaseUrl: metadataUrl, targetDir: metadataDir });
}

describe('aico-release', () => {
  it('creates a repository with root keys apart from online keys and consistent snapshots', async () => {
    const rootKeys = join(dir, 'offline-root-keys');
    expect(
      (
        await aicoRelease(
          'init',
          repoDir,
          '--root-keys',
          rootKeys,
          '--keys',
          'targets=3',
          '--threshold',
          'targets=2',
        )
      ).code,
    ).toBe(0);
    expect(await readdir(rootKeys)).toEqual([expect.stringMatching(/^root-[0-9a-f]{12}\.json$/)]);
    const online = await readdir(join(repoDir, 'keys/online'));
    expect(online.filter((n) => n.startsWith('targets-'))).toHaveLength(3);
    expect(online.some((n) => n.startsWith('root-'))).toBe(false);
    const root = JSON.parse(await readFile(join(repoDir, 'public/metadata/1.root.json'), 'utf8'));
    expect(root.signed.consistent_snapshot).toBe(true);
    expect(root.signed.roles.targets.threshold).toBe(2);
    expect(root.signed.expires).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  it('publishes a release with sha256-hashed targets and signed release metadata', async () => {
    await aicoRelease('init', repoDir);
    const added = await aicoRelease(
      'add',
      repoDir,
      '--component',
      'backend',
      '--version',
      '1.0.0',
      '--channel',
      'beta',
      '--critical',
      '--notes',
      'Security fix',
      '--min-from',
      '0.9.0',
      artifact,
    );
    expect(added).toMatchObject({
      code: 0,
      stdout: expect.stringContaining('published backend 1.0.0 on beta (critical)'),
    });
    const repo = await openRepository(repoDir);
    const targets = await repo.readTargets();
    expect(Object.keys(targets.targets).sort()).toEqual([
      'artifacts/backend/1.0.0/backend.tar',
      'releases/backend/1.0.0.json',
    ]);
    for (const entry of Object.values(targets.targets)) expect(entry.hashes.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(targets.targets['releases/backend/1.0.0.json']?.custom?.aico).toMatchObject({
      component: 'backend',
      version: '1.0.0',
      channel: 'beta',
      critical: true,
      notes: 'Security fix',
      min_from_version: '0.9.0',
      size_bytes: 11,
    });
    const timestamp = await repo.readTimestamp();
    expect(timestamp.expires).toMatch(/:\d\dZ$/);
    expect((await aicoRelease('list', repoDir)).stdout).toMatch(/^backend\t1\.0\.0\tbeta\tcritical\t11\t/);
  });

  it('refuses an existing version, a lower version without --force, and a bad channel, saying why', async () => {
    await aicoRelease('init', repoDir);
    await aicoRelease('add', repoDir, '--component', 'backend', '--version', '1.1.0', artifact);
    const exists = await aicoRelease(
      'add',
      repoDir,
      '--component',
      'backend',
      '--version',
      '1.1.0',
      artifact,
    );
    expect(exists).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('backend 1.1.0 is already published'),
    });
    const lower = await aicoRelease('add', repoDir, '--component', 'backend', '--version', '1.0.5', artifact);
    expect(lower).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('not newer than 1.1.0, the latest on channel stable'),
    });
    expect(
      (await aicoRelease('add', repoDir, '--component', 'backend', '--version', '1.0.5', '--force', artifact))
        .code,
    ).toBe(0);
    // Another channel has its own latest.
    expect(
      (
        await aicoRelease(
          'add',
          repoDir,
          '--component',
          'backend',
          '--version',
          '1.0.6',
          '--channel',
          'beta',
          artifact,
        )
      ).code,
    ).toBe(0);
    const channel = await aicoRelease(
      'add',
      repoDir,
      '--component',
      'backend',
      '--version',
      '2.0.0',
      '--channel',
      'nightly',
      artifact,
    );
    expect(channel).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('channel "nightly" is not allowed; use one of stable, beta, dev'),
    });
  });

  it('names the missing key when the signing keys are not there (wrong key folder)', async () => {
    await aicoRelease('init', repoDir);
    await rm(join(repoDir, 'keys/online'), { recursive: true });
    const result = await aicoRelease(
      'add',
      repoDir,
      '--component',
      'backend',
      '--version',
      '1.0.0',
      artifact,
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /role targets needs 1 signature\(s\) from keys [0-9a-f]{12}; found 0 of them .*--keys DIR/,
    );
  });

  it('refresh re-signs snapshot and timestamp with new versions and expiry', async () => {
    await aicoRelease('init', repoDir);
    const repo = await openRepository(repoDir);
    const before = await repo.readTimestamp();
    expect((await aicoRelease('refresh', repoDir)).code).toBe(0);
    const after = await repo.readTimestamp();
    expect(after.version).toBe(before.version + 1);
    expect((await repo.readSnapshot()).version).toBe(2);
  });

  it('rotate publishes root N+1 that a stock tuf-js client accepts, serving over HTTPS', async () => {
    await aicoRelease('init', repoDir);
    await aicoRelease('add', repoDir, '--component', 'backend', '--version', '1.0.0', artifact);
    expect((await aicoRelease('rotate', repoDir, '--role', 'targets')).stdout).toContain('root version 2');
    expect((await aicoRelease('rotate', repoDir, '--role', 'root')).stdout).toContain('root version 3');
    const repo = await openRepository(repoDir);
    const server = await serveRepository({ publicDir: repo.publicDir, tlsDir: join(repoDir, 'tls') });
    // The stock client uses the global fetch: trust the development certificate there.
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(new Agent({ connect: { ca: await readFile(server.caFile as string, 'utf8') } }));
    try {
      const updater = await stockTufJsClient(`${server.url}/metadata`);
      await updater.refresh();
      const info = await updater.getTargetInfo('artifacts/backend/1.0.0/backend.tar');
      expect(info?.length).toBe(11);
    } finally {
      setGlobalDispatcher(previous);
      await server.close();
    }
  });

  it('serves plain HTTP only when asked, and HTTPS otherwise', async () => {
    await aicoRelease('init', repoDir);
    const repo = await openRepository(repoDir);
    const https = await serveRepository({ publicDir: repo.publicDir, tlsDir: join(repoDir, 'tls') });
    const http = await serveRepository({ publicDir: repo.publicDir, insecureHttp: true });
    try {
      expect(https.url).toMatch(/^https:/);
      expect(http.url).toMatch(/^http:/);
      expect(http.caFile).toBeUndefined();
      const response = await fetch(`${http.url}/metadata/1.root.json`);
      expect(response.status).toBe(200);
      expect((await fetch(`${http.url}/../repo.json`)).status).toBe(404);
    } finally {
      await https.close();
      await http.close();
    }
  });
});

describe('Repository.addReleases', () => {
  it('publishes a batch in one new targets version and still refuses a duplicate inside it', async () => {
    const { initRepository } = await import('../../src/index.ts');
    const repo = await initRepository(repoDir);
    const before = (await repo.readTargets()).version;
    await repo.addReleases(
      ['1.0.0', '1.1.0', '1.2.0'].map((version) => ({
        component: 'backend',
        version,
        channel: 'stable',
        artifacts: [artifact],
      })),
    );
    expect((await repo.readTargets()).version).toBe(before + 1);
    expect((await repo.releases()).map((r) => r.version)).toEqual(['1.0.0', '1.1.0', '1.2.0']);
    await expect(
      repo.addReleases(
        ['1.3.0', '1.3.0'].map((version) => ({
          component: 'backend',
          version,
          channel: 'stable',
          artifacts: [artifact],
        })),
      ),
    ).rejects.toThrow('backend 1.3.0 is already published');
    expect((await repo.readTargets()).version).toBe(before + 1);
  });

  it('checks a release whole before it stores a byte: a refused one leaves nothing under targets/', async () => {
    const { initRepository } = await import('../../src/index.ts');
    const repo = await initRepository(repoDir);
    await repo.addRelease({
      component: 'backend',
      version: '1.0.0',
      channel: 'stable',
      artifacts: [artifact],
    });
    const targetsDir = join(repoDir, 'public/targets');
    const filesBefore = (await readdir(targetsDir, { recursive: true })).sort();
    expect(filesBefore.length).toBeGreaterThan(0);
    const refusals: [Record<string, unknown>, string][] = [
      [{ frontendApi: '2' }, '--frontend-api is for frontend releases'],
      [{ needsUpdater: 'not a range' }, 'needs_updater'],
      [{ packages: [{ platform: 'amiga', file: artifact }] }, 'platform "amiga" is not allowed'],
      [{ artifacts: [artifact, artifact] }, 'two artifacts are named'],
      [{ images: [{ service: 'Bad Name', archive: artifact }] }, 'image service name "Bad Name"'],
    ];
    for (const [extra, message] of refusals) {
      await expect(
        repo.addRelease({
          component: 'backend',
          version: '9.0.0',
          channel: 'stable',
          artifacts: [artifact],
          ...extra,
        }),
      ).rejects.toThrow(message);
    }
    expect((await readdir(targetsDir, { recursive: true })).sort()).toEqual(filesBefore);
    expect((await repo.releases()).map((r) => r.version)).not.toContain('9.0.0');
  });
});
