import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  ConfigError,
  describeSettings,
  effectiveSettings,
  httpSchema,
  installedSeedSchema,
  loadConfig,
  parseSettingsChange,
  updatePolicySchema,
} from '../../src/index.ts';

const schema = z.strictObject({
  update: updatePolicySchema,
  http: httpSchema(8080),
  installed: installedSeedSchema,
});

function problemsOf(action: () => unknown): string[] {
  try {
    action();
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  throw new Error('expected a ConfigError');
}

async function yamlFile(text: string): Promise<string> {
  const file = join(tmpdir(), `aico-config-${process.pid}-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, text);
  return file;
}

describe('loadConfig', () => {
  it('gives the seed defaults for the seven update options, and AICO’s auto_check and allow_restart', () => {
    expect(loadConfig(schema, { env: {} }).update).toEqual({
      check_interval: 24,
      auto_check: true,
      allow_restart: true,
      auto_download: true,
      auto_install: false,
      critical_install: true,
      notify_available: true,
      preferred_time: '03:00',
      channel: 'stable',
    });
  });

  it('reads environment variables derived from the key path, with their string forms', () => {
    const config = loadConfig(schema, {
      env: {
        AICO_UPDATE_CHECK_INTERVAL: '0.5',
        AICO_UPDATE_AUTO_INSTALL: 'yes',
        AICO_UPDATE_NOTIFY_AVAILABLE: 'false',
        AICO_UPDATE_CHANNEL: 'beta',
        AICO_HTTP_PORT: '9000',
        AICO_INSTALLED: 'backend=1.0.0, frontend=2.1.0',
      },
    });
    expect(config.update.check_interval).toBe(0.5);
    expect(config.update.auto_install).toBe(true);
    expect(config.update.notify_available).toBe(false);
    expect(config.update.channel).toBe('beta');
    expect(config.http.port).toBe(9000);
    expect(config.installed).toEqual({ backend: '1.0.0', frontend: '2.1.0' });
  });

  it('treats an empty environment variable as unset (what compose passes for an unset .env entry)', () => {
    const config = loadConfig(schema, {
      env: { AICO_UPDATE_CHANNEL: '', AICO_HTTP_PORT: '', AICO_INSTALLED: '' },
    });
    expect(config.update.channel).toBe('stable');
    expect(config.http.port).toBe(8080);
    expect(config.installed).toEqual({});
  });

  it('reads a YAML file, nested or with the seed dotted names, and lets the environment win', async () => {
    const file = await yamlFile('update.check_interval: 6\nupdate.channel: dev\nhttp:\n  port: 7000\n');
    const config = loadConfig(schema, { file, env: { AICO_UPDATE_CHANNEL: 'beta' } });
    expect(config.update.check_interval).toBe(6);
    expect(config.update.channel).toBe('beta');
    expect(config.http.port).toBe(7000);
  });

  it('names the key, the value, where it came from and what is allowed', async () => {
    const file = await yamlFile('update:\n  channel: nightly\n');
    const problems = problemsOf(() =>
      loadConfig(schema, { file, env: { AICO_UPDATE_CHECK_INTERVAL: 'daily' } }),
    );
    expect(problems).toHaveLength(2);
    expect(problems).toContainEqual(
      expect.stringMatching(
        /^update\.channel = "nightly" \(from file .*\): allowed is one of stable, beta, dev$/,
      ),
    );
    expect(problems).toContainEqual(
      'update.check_interval = "daily" (from environment AICO_UPDATE_CHECK_INTERVAL): allowed is a number of hours > 0 and ≤ 8760',
    );
  });

  it.each([
    ['AICO_UPDATE_PREFERRED_TIME', '25:00', /update\.preferred_time = "25:00".*HH:MM/],
    ['AICO_UPDATE_AUTO_DOWNLOAD', 'maybe', /update\.auto_download = "maybe".*true or false/],
    ['AICO_UPDATE_CHECK_INTERVAL', '0', /update\.check_interval = "0".*> 0/],
    ['AICO_HTTP_PORT', '70000', /http\.port = "70000".*a TCP port from 0 to 65535/],
    ['AICO_INSTALLED', 'backend=latest', /installed\.backend = "latest".*semver/],
  ])('rejects %s=%s', (name, value, pattern) => {
    expect(problemsOf(() => loadConfig(schema, { env: { [name]: value } }))).toEqual([
      expect.stringMatching(pattern),
    ]);
  });

  it('rejects unknown keys, listing the allowed ones (a typo must not be ignored)', async () => {
    const file = await yamlFile('update:\n  chanel: beta\n');
    expect(problemsOf(() => loadConfig(schema, { file, env: {} }))).toEqual([
      'update: unknown key "chanel"; allowed: check_interval, auto_check, auto_download, auto_install, critical_install, allow_restart, notify_available, preferred_time, channel',
    ]);
  });

  it('says so when the named config file is missing', () => {
    expect(
      problemsOf(() => loadConfig(schema, { env: { AICO_CONFIG_FILE: '/nonexistent/aico.yaml' } })),
    ).toEqual([expect.stringContaining('config file /nonexistent/aico.yaml: file not found')]);
  });

  it('lists every setting with its environment variable and what it allows', () => {
    expect(describeSettings(schema)).toContainEqual({
      key: 'update.channel',
      env: 'AICO_UPDATE_CHANNEL',
      default: 'stable',
      allowed: 'one of stable, beta, dev',
    });
  });
});

describe('targetsUrlOf', () => {
  it('defaults to the targets folder beside the metadata URL', async () => {
    const { targetsUrlOf } = await import('../../src/index.ts');
    expect(targetsUrlOf({ metadata_url: 'https://u.example/aico/metadata/' })).toBe(
      'https://u.example/aico/targets',
    );
    expect(
      targetsUrlOf({ metadata_url: 'https://u.example/metadata', targets_url: 'https://cdn.example/t' }),
    ).toBe('https://cdn.example/t');
  });
});

describe('settings changes (update.settings from the bus and the control API)', () => {
  it('validates a change as the config file is validated, naming the key, the value and what is allowed', () => {
    expect(parseSettingsChange({ preferred_time: '02:30', auto_install: true })).toEqual({
      ok: true,
      change: { preferred_time: '02:30', auto_install: true },
    });
    expect(parseSettingsChange({ preferred_time: '25:00', channel: 'nightly', nope: 1 })).toEqual({
      ok: false,
      problems: [
        'update.preferred_time = "25:00": allowed is a time of day as HH:MM, 24-hour clock (e.g. 03:00)',
        'update.channel = "nightly": allowed is one of stable, beta, dev',
        'update: unknown key "nope"; allowed: check_interval, auto_check, auto_download, auto_install, critical_install, allow_restart, notify_available, preferred_time, channel',
      ],
    });
    expect(parseSettingsChange({ check_interval: 0 })).toMatchObject({
      ok: false,
      problems: ['update.check_interval = 0: allowed is a number of hours > 0 and ≤ 8760'],
    });
  });

  it('overlays only what the user set on the configuration', () => {
    const defaults = loadConfig(schema, { env: { AICO_UPDATE_CHANNEL: 'beta' } }).update;
    expect(effectiveSettings(defaults, { auto_install: true })).toEqual({ ...defaults, auto_install: true });
  });
});
