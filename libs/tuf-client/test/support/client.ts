import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestRepository } from '@aico-update/release/testing';
import { type FetcherOptions, TufClient, TufError, TufFetcher } from '../../src/index.ts';

export interface ClientUnderTest {
  client: TufClient;
  fetcher: TufFetcher;
  metadataDir: string;
  targetsDir: string;
}

/** The client as the services build it, pointed at a test repository, with short timeouts. */
export function clientFor(t: TestRepository, name = 'client', fetcher: FetcherOptions = {}): ClientUnderTest {
  const stateDir = join(t.workDir, name);
  const f = new TufFetcher({
    caFile: t.caFile,
    idleTimeoutMs: 1000,
    retries: 1,
    retryDelayMs: 10,
    tmpDir: join(stateDir, 'tmp'),
    ...fetcher,
  });
  const metadataDir = join(stateDir, 'metadata');
  const targetsDir = join(stateDir, 'targets');
  const client = new TufClient({
    metadataDir,
    workDir: stateDir,
    trustedRootFile: t.repo.trustedRootPath,
    metadataUrl: t.metadataUrl,
    targetsUrl: t.targetsUrl,
    targetsDir,
    fetcher: f,
  });
  return { client, fetcher: f, metadataDir, targetsDir };
}

/** sha256 of every file in a folder and its subfolders: "the trusted state" before and after an attack. */
export async function folderState(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) {
    if ((await stat(join(dir, name))).isDirectory()) {
      for (const [inner, hash] of Object.entries(await folderState(join(dir, name))))
        out[`${name}/${inner}`] = hash;
      continue;
    }
    out[name] = createHash('sha256')
      .update(await readFile(join(dir, name)))
      .digest('hex');
  }
  return out;
}

/** Runs a session and returns the TufError it failed with (or throws if it succeeded). */
export async function rejection(promise: Promise<unknown>): Promise<TufError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof TufError) return error;
    throw error;
  }
  throw new Error('expected the operation to be rejected');
}

/** Refreshes and returns the versions of trusted metadata. */
export function refresh(c: ClientUnderTest) {
  return c.client.session(async (s) => s.versions);
}

/** The version of each trusted top-level role on disk, as the client keeps it. */
export async function trustedVersions(metadataDir: string): Promise<Record<string, number | undefined>> {
  const out: Record<string, number | undefined> = {};
  for (const role of ['root', 'timestamp', 'snapshot', 'targets']) {
    const text = await readFile(join(metadataDir, `${role}.json`), 'utf8').catch(() => undefined);
    out[role] = text ? (JSON.parse(text) as { signed: { version: number } }).signed.version : undefined;
  }
  return out;
}
