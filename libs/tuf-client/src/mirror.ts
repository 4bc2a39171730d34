import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { hasCode, writeFileAtomic } from '@aico-update/shared';
import { BaseFetcher } from 'tuf-js';
import { DownloadHTTPError, DownloadLengthMismatchError } from 'tuf-js/dist/error.js';
import { ROOT_HISTORY } from './client.ts';
import type { FetchError } from './fetch-errors.ts';

/*
 * A local TUF mirror: the metadata a client has verified, laid out as the repository serves it
 * (`N.root.json` for every trusted root, `N.snapshot.json`, `N.targets.json`, `timestamp.json`), in a
 * folder another client reads with its own trusted state. TUF metadata verifies itself, so whoever can
 * write the folder can at most withhold or freeze it until it expires: never make a reader trust
 * something the publisher did not sign. The downloader keeps one in the shared cache for the installer,
 * which has no route to the update server of its own.
 */

/** Writes the verified metadata of `metadataDir` into `mirrorDir`: roots first, timestamp last. */
export async function exportMirror(metadataDir: string, mirrorDir: string): Promise<void> {
  await mkdir(mirrorDir, { recursive: true });
  const existing = new Set(await readdir(mirrorDir));
  const put = async (name: string, bytes: Buffer) => {
    if (existing.has(name) && (await readFile(join(mirrorDir, name))).equals(bytes)) return;
    await writeFileAtomic(join(mirrorDir, name), bytes);
  };
  for (const name of await readdir(join(metadataDir, ROOT_HISTORY)).catch(() => [] as string[])) {
    if (/^\d+\.root\.json$/.test(name))
      await put(name, await readFile(join(metadataDir, ROOT_HISTORY, name)));
  }
  const roles = (await readdir(metadataDir)).filter(
    (name) => name.endsWith('.json') && name !== 'root.json' && name !== 'timestamp.json',
  );
  // Delegated roles, then targets, then snapshot: each before the file that points at it.
  const order = (name: string) => (name === 'snapshot.json' ? 2 : name === 'targets.json' ? 1 : 0);
  const current = new Map<string, number>();
  for (const name of roles.sort((a, b) => order(a) - order(b))) {
    const bytes = await readFile(join(metadataDir, name));
    const version = versionOf(bytes);
    if (version === undefined) continue;
    await put(`${version}.${name}`, bytes);
    await put(name, bytes);
    current.set(name, version);
  }
  const timestamp = await readFile(join(metadataDir, 'timestamp.json')).catch(() => undefined);
  if (timestamp) await put('timestamp.json', timestamp);
  // Versions older than the one before the current go: a reader in the middle of a refresh still finds
  // what the previous timestamp pointed at.
  for (const name of existing) {
    const match = /^(\d+)\.(.+\.json)$/.exec(name);
    if (!match || match[2] === 'root.json') continue;
    const now = current.get(match[2] as string);
    if (now !== undefined && Number(match[1]) < now - 1) await rm(join(mirrorDir, name), { force: true });
  }
}

function versionOf(bytes: Buffer): number | undefined {
  try {
    const version = (JSON.parse(bytes.toString('utf8')) as { signed?: { version?: unknown } }).signed
      ?.version;
    return typeof version === 'number' && Number.isInteger(version) ? version : undefined;
  } catch {
    return undefined;
  }
}

/** The metadata URL a client reading a mirror folder uses. */
export function mirrorUrl(mirrorDir: string): string {
  return pathToFileURL(mirrorDir).toString();
}

/**
 * A tuf-js fetcher that reads `file://` URLs below one folder (a mirror). A missing file is a 404, as
 * tuf-js expects for "no newer root"; a file longer than allowed is endless data. The bytes are copied
 * into a private temporary file before tuf-js sees them, so a writer of the mirror cannot change a file
 * between its verification and its use.
 */
export class DirectoryFetcher extends BaseFetcher {
  /** Never set: a folder has no transport failures (the client reads it like TufFetcher's). */
  lastError: FetchError | undefined;
  readonly #root: string;
  readonly #tmpDir: string;

  constructor(options: { root: string; tmpDir: string }) {
    super();
    this.#root = options.root;
    this.#tmpDir = options.tmpDir;
  }

  override async fetch(url: string): Promise<ReadableStream<Uint8Array<ArrayBuffer>>> {
    const bytes = await this.#read(url, Number.MAX_SAFE_INTEGER);
    return new Blob([bytes]).stream() as ReadableStream<Uint8Array<ArrayBuffer>>;
  }

  override async downloadFile<T>(
    url: string,
    maxLength: number,
    handler: (file: string) => Promise<T>,
  ): Promise<T> {
    const bytes = await this.#read(url, maxLength);
    await mkdir(this.#tmpDir, { recursive: true, mode: 0o700 });
    const file = join(this.#tmpDir, `mirror-${randomBytes(6).toString('hex')}`);
    await writeFile(file, bytes, { mode: 0o600 });
    try {
      return await handler(file);
    } finally {
      await rm(file, { force: true });
    }
  }

  async #read(url: string, maxLength: number): Promise<Buffer> {
    let path: string;
    try {
      path = fileURLToPath(url);
    } catch {
      throw new DownloadHTTPError(`${url} is not a file URL of the mirror`, 404);
    }
    if (!path.startsWith(`${this.#root.replace(/\/+$/, '')}/`)) {
      throw new DownloadHTTPError(`${url} is outside the mirror ${this.#root}`, 404);
    }
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (error) {
      if (hasCode(error, 'ENOENT')) throw new DownloadHTTPError(`${url}: not in the mirror`, 404);
      throw error;
    }
    if (bytes.length > maxLength) {
      throw new DownloadLengthMismatchError(
        `${url}: more than the allowed ${maxLength} bytes (endless data)`,
      );
    }
    return bytes;
  }
}
