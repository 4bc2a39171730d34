import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, stat, truncate } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { docker, makeTempDir } from '@aico-update/shared/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/*
 * infra/state-backup.sh on the real Docker Engine: the named volumes of a compose project are archived
 * while the containers using them are stopped, and restored into the same volumes (contents, owners,
 * nothing left of what was there) or into new ones that compose will adopt.
 */

const run = promisify(execFile);
const script = resolve(import.meta.dirname, '../../infra/state-backup.sh');
const project = `aicobak${randomBytes(3).toString('hex')}`;
// The local Node base image has tar, like the installer's image the script uses by default.
const env = { ...process.env, AICO_STATE_BACKUP_IMAGE: 'node:24-bookworm-slim' };
const volume = (name: string) => `${project}_${name}`;
const user = `${project}-user`;

async function composeVolume(name: string): Promise<void> {
  await docker(
    ...['volume', 'create', '--label', `com.docker.compose.project=${project}`],
    ...['--label', `com.docker.compose.volume=${name}`, volume(name)],
  );
}

/** Runs a shell command in a throwaway container with the volume at /v. */
const inVolume = (name: string, command: string) =>
  docker('run', '--rm', '-v', `${volume(name)}:/v`, 'node:24-bookworm-slim', 'sh', '-c', command);

const stateBackup = (...args: string[]) => run('bash', [script, ...args], { env });

beforeAll(async () => {
  await composeVolume('checker-state');
  await composeVolume('redis-data');
  await inVolume(
    'checker-state',
    'mkdir /v/tuf && echo trusted > /v/tuf/root.json && chown -R 1000:1000 /v/tuf',
  );
  await inVolume('redis-data', 'echo "SET a 1" > /v/appendonly.aof');
  // A service using a volume, as the checker does.
  await docker(
    ...['run', '-d', '--init', '--name', user, '-v', `${volume('checker-state')}:/state`],
    ...['node:24-bookworm-slim', 'node', '-e', 'setInterval(() => {}, 1000)'],
  );
});

afterAll(async () => {
  await docker('rm', '-f', user).catch(() => undefined);
  const volumes = await docker(
    'volume',
    'ls',
    '-q',
    '--filter',
    `label=com.docker.compose.project=${project}`,
  );
  if (volumes) await docker('volume', 'rm', '-f', ...volumes.split('\n'));
});

describe('infra/state-backup.sh', () => {
  it('backs up every volume of the project and restores it as it was', { timeout: 120_000 }, async () => {
    const dir = await makeTempDir('state-backup');
    const { stdout } = await stateBackup('backup', dir, project);
    expect((await readdir(dir)).sort()).toEqual(['checker-state.tar', 'redis-data.tar']);
    expect(stdout).toContain(`${volume('checker-state')} → ${dir}/checker-state.tar`);
    // The user was stopped for the copy and runs again.
    expect(await docker('inspect', '--format', '{{.State.Running}}', user)).toBe('true');
    expect(Number(await docker('inspect', '--format', '{{.RestartCount}}', user))).toBe(0);

    // Damage: a changed file, a stray one, a deleted one.
    await inVolume('checker-state', 'echo forged > /v/tuf/root.json && touch /v/stray');
    await inVolume('redis-data', 'rm /v/appendonly.aof');

    await stateBackup('restore', dir, project);
    expect(
      await inVolume('checker-state', 'cat /v/tuf/root.json; stat -c %u:%g /v/tuf/root.json; ls /v'),
    ).toBe('trusted\n1000:1000\ntuf');
    expect(await inVolume('redis-data', 'cat /v/appendonly.aof')).toBe('SET a 1');
    expect(await docker('inspect', '--format', '{{.State.Running}}', user)).toBe('true');
  });

  it('restores into a volume that no longer exists, labelled for compose', { timeout: 60_000 }, async () => {
    const dir = await makeTempDir('state-backup');
    await stateBackup('backup', dir, project);
    await docker('volume', 'rm', volume('redis-data'));
    await stateBackup('restore', dir, project);
    expect(await inVolume('redis-data', 'cat /v/appendonly.aof')).toBe('SET a 1');
    const labels = JSON.parse(
      await docker('volume', 'inspect', '--format', '{{json .Labels}}', volume('redis-data')),
    );
    expect(labels).toMatchObject({
      'com.docker.compose.project': project,
      'com.docker.compose.volume': 'redis-data',
    });
  });

  it('leaves a volume as it was when its archive is cut short', { timeout: 60_000 }, async () => {
    const dir = await makeTempDir('state-backup');
    await stateBackup('backup', dir, project);
    await inVolume('checker-state', 'echo newer > /v/tuf/root.json');
    const tar = `${dir}/checker-state.tar`;
    await truncate(tar, Math.floor((await stat(tar)).size / 2));
    const failure = await stateBackup('restore', dir, project).catch((e) => e);
    expect(failure.stderr).toMatch(/restoring .*checker-state\.tar failed: .* was left as it was/);
    expect(await inVolume('checker-state', 'cat /v/tuf/root.json; ls -A /v')).toBe('newer\ntuf');
    expect(await docker('inspect', '--format', '{{.State.Running}}', user)).toBe('true');
  });

  it('says what is wrong for a project without volumes, and writes nothing', async () => {
    const dir = await makeTempDir('state-backup');
    const failure = await stateBackup('backup', dir, `${project}-none`).catch((e) => e);
    expect(failure.stderr).toMatch(/no volumes of compose project/);
    expect(await readdir(dir)).toEqual([]);
  });
});
