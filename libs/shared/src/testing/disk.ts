import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A small disk to fill: a tmpfs of `size` (mount's syntax: 4k, 2m) mounted on `dir`, created if
 * missing. Needs root (CI runs as root). Returns the unmount; a test that fails on the way still
 * has to call it.
 */
export async function mountSmallDisk(dir: string, size: string): Promise<() => Promise<void>> {
  if (process.getuid?.() !== 0)
    throw new Error('this test mounts a small tmpfs and must run as root (CI does)');
  await mkdir(dir, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return async () => void (await run('umount', [dir]));
}
