import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const main = resolve(import.meta.dirname, '../../src/main.ts');
const exec = promisify(execFile);

async function startWith(env: Record<string, string>): Promise<{ code: number; log: string }> {
  try {
    await exec(process.execPath, [main], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 });
    return { code: 0, log: '' };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, log: e.stdout + e.stderr };
  }
}

describe('checker process start', () => {
  it('stops with exit 78 naming every bad key, its value, its source and what is allowed', async () => {
    const { code, log } = await startWith({
      AICO_UPDATE_CHANNEL: 'nightly',
      AICO_UPDATE_PREFERRED_TIME: '3am',
      AICO_UPDATE_SERVER_METADATA_URL: 'http://updates.example.org/metadata',
    });
    expect(code).toBe(78);
    const entry = JSON.parse(log.trim().split('\n').at(-1) as string);
    expect(entry).toMatchObject({ level: 'fatal', service: 'checker' });
    expect(entry.problems).toEqual([
      'update.preferred_time = "3am" (from environment AICO_UPDATE_PREFERRED_TIME): allowed is a time of day as HH:MM, 24-hour clock (e.g. 03:00)',
      'update.channel = "nightly" (from environment AICO_UPDATE_CHANNEL): allowed is one of stable, beta, dev',
      expect.stringMatching(
        /^update_server\.metadata_url = "http:\/\/updates\.example\.org\/metadata" \(from environment AICO_UPDATE_SERVER_METADATA_URL\): allowed is .*https:\/\//,
      ),
    ]);
  });

  it('names a missing required key', async () => {
    const { code, log } = await startWith({});
    expect(code).toBe(78);
    expect(log).toContain('update_server.metadata_url = missing: allowed is an http(s) URL');
  });

  it('says which dependency is unreachable when it cannot start, and exits non-zero', async () => {
    const { code, log } = await startWith({
      AICO_UPDATE_SERVER_METADATA_URL: 'https://127.0.0.1:1/metadata',
      AICO_REDIS_URL: 'redis://127.0.0.1:1',
      AICO_TUF_STATE_DIR: '/tmp/aico-startup-test',
    });
    expect(code).toBe(69);
    expect(log).toMatch(
      /checker could not start: cannot connect to Redis at redis:\/\/127\.0\.0\.1:1 \(connect ECONNREFUSED 127\.0\.0\.1:1\); check redis\.url/,
    );
  });
});
