import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '@aico-update/shared/testing';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { controlToken, hostNameOf } from '../../src/control-guard.ts';
import { isResponseTopic } from '../../src/handlers/bus-requests.ts';

const logger = pino({ level: 'silent' });

describe('the control token', () => {
  it('is made on first start (0600), kept across restarts, and a configured one wins', async () => {
    const dir = await makeTempDir('gateway-state');
    const first = await controlToken('', dir, logger);
    expect(first.source).toBe('generated');
    expect(first.token.length).toBeGreaterThanOrEqual(40);
    expect((await stat(first.file)).mode & 0o777).toBe(0o600);
    expect((await readFile(first.file, 'utf8')).trim()).toBe(first.token);
    expect(await controlToken('', dir, logger)).toMatchObject({ token: first.token, source: 'file' });
    expect(await controlToken('a-configured-token-xyz', dir, logger)).toMatchObject({
      token: 'a-configured-token-xyz',
      source: 'config',
    });
  });

  it('replaces a stored token too short to be one', async () => {
    const dir = await makeTempDir('gateway-state');
    await writeFile(join(dir, 'control-token'), 'abc\n');
    const token = await controlToken('', dir, logger);
    expect(token.source).toBe('generated');
    expect(token.token).not.toBe('abc');
  });
});

describe('names and topics a peer gives', () => {
  it('reads the host name of Host headers and Origins', () => {
    expect(hostNameOf('127.0.0.1:8084')).toBe('127.0.0.1');
    expect(hostNameOf('[::1]:8084')).toBe('::1');
    expect(hostNameOf('LocalHost')).toBe('localhost');
    expect(hostNameOf('http://evil.example:8084')).toBe('evil.example');
    expect(hostNameOf('http://[bad')).toBeUndefined();
  });

  it('answers only on response topics and inboxes, whatever a reply_to says', () => {
    for (const ok of [
      'update.check.response',
      'update/install/response/v1',
      '_INBOX.abc.1',
      'aico.default.update.settings.response',
    ]) {
      expect(isResponseTopic(ok), ok).toBe(true);
    }
    for (const bad of [
      'update.install.request',
      'update.rollback.request',
      'aico.x.y',
      '',
      'x'.repeat(300),
    ]) {
      expect(isResponseTopic(bad), bad).toBe(false);
    }
  });
});
