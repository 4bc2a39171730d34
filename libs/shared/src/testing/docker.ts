import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeTempDir } from './servers.ts';

/*
 * Sample images on the real Docker Engine, without a registry: a base layer imported from a generated
 * root filesystem, and application images committed on top of it (one more layer each). Good enough to
 * prove that blobs round-trip and that an app-only change moves only the app layer.
 */

const run = promisify(execFile);

/**
 * A tag unique to this test process: suites that create and delete images must not touch another run's
 * (CI and a developer may share one engine). Base images are only ever created, so they may be shared.
 */
const RUN_ID = randomBytes(3).toString('hex');
export function testTag(repository: string, tag: string): string {
  return `${repository}:${tag}-${RUN_ID}`;
}

export async function docker(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run('docker', args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout.trim();
  } catch (error) {
    const e = error as { stderr?: string; code?: string };
    if (e.code === 'ENOENT')
      throw new Error('the docker CLI is not installed: run bash scripts/setup.sh --with-docker');
    throw new Error(`docker ${args.join(' ')} failed: ${e.stderr?.trim() ?? String(error)}`);
  }
}

/** A one-layer image of a folder's files (tar, then `docker import`); returns the image id. */
export async function importFolder(dir: string, tag: string, ...changes: string[]): Promise<string> {
  const work = await makeTempDir('import');
  try {
    await run('tar', ['--sort=name', '-C', dir, '-cf', join(work, 'rootfs.tar'), '.']);
    await docker(
      'import',
      ...changes.flatMap((change) => ['--change', change]),
      join(work, 'rootfs.tar'),
      tag,
    );
    return await docker('image', 'inspect', '--format', '{{.Id}}', tag);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** A base image whose single layer holds `sizeBytes` of incompressible files (a stand-in for an OS + runtime). */
export async function ensureBaseImage(tag: string, sizeBytes: number): Promise<void> {
  if (
    await docker('image', 'inspect', tag).then(
      () => true,
      () => false,
    )
  )
    return;
  const dir = await makeTempDir('rootfs');
  try {
    await mkdir(join(dir, 'rootfs', 'usr', 'lib'), { recursive: true });
    await writeFile(join(dir, 'rootfs', 'usr', 'lib', 'runtime.bin'), randomBytes(sizeBytes));
    await importFolder(join(dir, 'rootfs'), tag);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Commits an application image on `base`: one layer with /app/version and `appBytes` of app code. */
export async function buildAppImage(
  base: string,
  tag: string,
  version: string,
  appBytes: number,
): Promise<string> {
  const dir = await makeTempDir('app');
  const name = `aico-build-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(join(dir, 'app'));
    await writeFile(join(dir, 'app', 'version'), version);
    await writeFile(join(dir, 'app', 'code.bin'), randomBytes(appBytes));
    await docker('create', '--name', name, base, '/app/run');
    await docker('cp', join(dir, 'app'), `${name}:/app`);
    await docker('commit', '--change', `LABEL org.opencontainers.image.version=${version}`, name, tag);
    return await docker('image', 'inspect', '--format', '{{.Id}}', tag);
  } finally {
    await docker('rm', '-f', name).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

export type SampleBehaviour = 'healthy' | 'unhealthy' | 'exits';

/**
 * A sample "AICO backend" image (~2 MB): static busybox httpd on port 8771 answering
 * `GET /api/v1/health` with `{"status":"healthy","service":"backend","version":…}`, with a HEALTHCHECK
 * every second (a generous timeout and three tries: on a loaded two-core box `docker exec` alone can take
 * seconds, and a healthy sample that flaps to `unhealthy` fails tests that are about something else).
 * `unhealthy` serves no health endpoint (its HEALTHCHECK fails); `exits` stops at once.
 * Like a real backend it "migrates" its data when a volume is mounted at /data: every start appends
 * `started <version>` to /data/log and creates /data/written-by-<version>. Busybox's applets are
 * installed, so there is a shell for hooks and helpers.
 * Needs Debian's busybox-static (bash scripts/setup.sh --with-docker installs it).
 */
export async function buildSampleBackend(
  tag: string,
  version: string,
  behaviour: SampleBehaviour = 'healthy',
): Promise<string> {
  const dir = await makeTempDir('sample');
  try {
    const root = join(dir, 'rootfs');
    await mkdir(join(root, 'bin'), { recursive: true });
    await mkdir(join(root, 'www', 'api', 'v1'), { recursive: true });
    await mkdir(join(root, 'tmp'), { mode: 0o1777 });
    await run('cp', ['/bin/busybox', join(root, 'bin', 'busybox')]).catch(() => {
      throw new Error(
        '/bin/busybox is missing: apt-get install -y busybox-static (bash scripts/setup.sh --with-docker)',
      );
    });
    await writeFile(join(root, 'www', 'version'), version);
    const applets = (await run('/bin/busybox', ['--list'])).stdout.split('\n').filter(Boolean);
    for (const applet of applets.filter((a) => a !== 'busybox'))
      await symlink('busybox', join(root, 'bin', applet));
    if (behaviour !== 'unhealthy') {
      await writeFile(
        join(root, 'www', 'api', 'v1', 'health'),
        JSON.stringify({ status: 'healthy', service: 'backend', version }),
      );
    }
    const migrate = `if [ -d /data ]; then echo started ${version} >> /data/log; touch /data/written-by-${version}; fi`;
    const serve = behaviour === 'exits' ? 'exit 1' : 'exec httpd -f -p 8771 -h /www';
    const cmd = JSON.stringify(['/bin/sh', '-c', `${migrate}; ${serve}`]);
    return await importFolder(
      root,
      tag,
      `CMD ${cmd}`,
      'EXPOSE 8771',
      `LABEL org.opencontainers.image.version=${version}`,
      'HEALTHCHECK --interval=1s --timeout=10s --retries=3 CMD ["/bin/busybox","wget","-q","-O","/dev/null","http://127.0.0.1:8771/api/v1/health"]',
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * When the engine first logged `event` (e.g. `start`, `die`, `health_status: healthy`) for a container
 * since `sinceSeconds` (Unix time), in nanoseconds: the order of what happened, from the engine itself.
 */
export async function engineEventTime(
  container: string,
  event: string,
  sinceSeconds: number,
): Promise<number> {
  const lines = await docker(
    'events',
    '--since',
    String(sinceSeconds),
    '--until',
    String(Math.ceil(Date.now() / 1000)),
    '--filter',
    `container=${container}`,
    '--filter',
    `event=${event}`,
    '--format',
    '{{.TimeNano}}',
  );
  const value = Number(lines.split('\n')[0]);
  if (!lines || !Number.isFinite(value)) throw new Error(`the engine logged no ${event} for ${container}`);
  return value;
}
