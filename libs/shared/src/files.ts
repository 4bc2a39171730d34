import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Length and sha256 of a file, streamed (memory does not grow with the file). */
export async function hashFile(path: string): Promise<{ length: number; sha256: string }> {
  const hash = createHash('sha256');
  let length = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    length += (chunk as Buffer).length;
  }
  return { length, sha256: hash.digest('hex') };
}

/** Writes `data` to a temporary file beside `path`, fsyncs it and renames it over `path`: all or nothing. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  const handle = await open(tmp, 'w', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}

/** Flushes a file that was written through a stream to the disk. */
export async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The JSON value of `text`, or undefined when it is not JSON (for input that may be anything). */
export function parseJsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The bytes of a file another process may have written: a regular file (no symlink followed, no FIFO
 * that would block), at most `maxBytes`. Read once, so what is checked is what is used. Throws ENOENT as
 * it comes, and an error with code `NOT_A_FILE` or `TOO_LARGE` for the rest.
 */
export async function readRegularFile(path: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const info = await handle.stat();
    if (!info.isFile())
      throw Object.assign(new Error(`${path} is not a regular file`), { code: 'NOT_A_FILE' });
    if (info.size > maxBytes) {
      throw Object.assign(new Error(`${path} is larger than ${maxBytes} bytes`), { code: 'TOO_LARGE' });
    }
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

/** sha256 of bytes in memory, hex. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * A secret kept in a file: the one stored there when it parses, else a new one made, written atomically
 * with `mode` (its folder created) and returned. `replaced` says a file was there but did not parse.
 */
export async function keptSecret<T>(
  file: string,
  options: { parse: (text: string) => T | undefined; make: () => { value: T; text: string }; mode?: number },
): Promise<{ value: T; made: boolean; replaced: boolean }> {
  let replaced = false;
  try {
    const value = options.parse(await readFile(file, 'utf8'));
    if (value !== undefined) return { value, made: false, replaced };
    replaced = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const { value, text } = options.make();
  await mkdir(dirname(file), { recursive: true });
  await writeFileAtomic(file, text, options.mode ?? 0o600);
  return { value, made: true, replaced };
}

/** 256 random bits as a base64url string, for passwords and tokens; stored files hold it on one line. */
export const randomSecret = () => {
  const value = randomBytes(32).toString('base64url');
  return { value, text: `${value}\n` };
};

/** A stored random secret (see randomSecret): at least 32 characters on its first line. */
export const parseSecret = (text: string) => (text.trim().length >= 32 ? text.trim() : undefined);
