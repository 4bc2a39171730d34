import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { startTestRepository, type TestRepository } from '@aico-update/release/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const bin = resolve(import.meta.dirname, '../../bin/tuf-conformance-client');
const exec = promisify(execFile);

async function client(...args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await exec(process.execPath, [bin, ...args], { env: { ...process.env, NODE_EXTRA_CA_CERTS: t.caFile } });
    return { code: 0, stderr: '' };
  } catch (error) {
    return { code: (error as { code: number }).code, stderr: (error as { stderr: string }).stderr };
  }
}

let t: TestRepository;
let metadataDir: string;
let targetDir: string;

beforeEach(async () => {
  t = await startTestRepository();
  await t.publish({ component: 'backend', version: '1.0.0', channel: 'stable' });
  metadataDir = join(t.workDir, 'client', 'metadata');
  targetDir = join(t.workDir, 'client', 'targets');
});

afterEach(async () => {
  await t.close();
});

describe('tuf-conformance-client (the TUF conformance suite protocol)', () => {
  it('init copies the trusted root without touching the network', async () => {
    expect(await client('--metadata-dir', metadataDir, 'init', t.repo.trustedRootPath)).toEqual({
      code: 0,
      stderr: '',
    });
    expect(await readdir(metadataDir)).toEqual(['root.json']);
    expect(t.faults.requests).toEqual([]);
  });

  it('refresh stores metadata under non-versioned names; download verifies and does not fetch a valid target again', async () => {
    await client('--metadata-dir', metadataDir, 'init', t.repo.trustedRootPath);
    expect(
      (await client('--metadata-url', t.metadataUrl, '--metadata-dir', metadataDir, 'refresh')).code,
    ).toBe(0);
    // The suite reads the *.json files; the roots' history is a folder beside them.
    expect((await readdir(metadataDir)).sort()).toEqual([
      'root.json',
      'root_history',
      'snapshot.json',
      'targets.json',
      'timestamp.json',
    ]);

    const target = 'artifacts/backend/1.0.0/backend-1.0.0.bin';
    const download = () =>
      client(
        '--metadata-url',
        t.metadataUrl,
        '--metadata-dir',
        metadataDir,
        '--target-name',
        target,
        '--target-dir',
        targetDir,
        '--target-base-url',
        t.targetsUrl,
        'download',
      );
    expect((await download()).code).toBe(0);
    expect(await readFile(join(targetDir, encodeURIComponent(target)))).toEqual(Buffer.alloc(64, '1.0.0'));
    const targetRequests = () => t.faults.requests.filter((r) => r.path.startsWith('/targets/')).length;
    expect(targetRequests()).toBe(1);
    expect((await download()).code).toBe(0);
    expect(targetRequests()).toBe(1);
  });

  it('exits 1 with the classified reason when the repository is attacked', async () => {
    await client('--metadata-dir', metadataDir, 'init', t.repo.trustedRootPath);
    await client('--metadata-url', t.metadataUrl, '--metadata-dir', metadataDir, 'refresh');
    await t.repo.refresh({ expiresAt: { timestamp: '2020-01-01T00:00:00Z' } });
    const result = await client('--metadata-url', t.metadataUrl, '--metadata-dir', metadataDir, 'refresh');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('(TUF_EXPIRED)');
    const missing = await client(
      '--metadata-url',
      t.metadataUrl,
      '--metadata-dir',
      join(t.workDir, 'empty'),
      'refresh',
    );
    expect(missing.code).toBe(1);
  });
});
