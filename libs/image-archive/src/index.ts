import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract, pack } from 'tar-stream';

/*
 * Container images as content-addressed blobs: `docker save` output is split into its config and layer
 * files, each named by its sha256, and a set of verified blobs is assembled back into an archive that
 * `docker load` accepts. The image id is the sha256 of the config, so an assembled image has exactly the
 * id of the one that was saved; the installer checks that before it stops anything.
 */

export interface Blob {
  /** `sha256:<hex>` of the file's bytes. */
  digest: string;
  length: number;
}

export interface ExtractedBlob extends Blob {
  /** Where the bytes are on disk. */
  file: string;
}

export interface ArchivedImage<B extends Blob = ExtractedBlob> {
  /** `sha256:<hex>` of the config: what `docker inspect` shows as the image Id. */
  imageId: string;
  repoTags: string[];
  config: B;
  layers: B[];
}

interface ManifestEntry {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[];
}

/** A pass-through stream that hashes what flows through it; `result()` once it has ended. */
function digesting(): { stream: Transform; result: () => Blob } {
  const hash = createHash('sha256');
  let length = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      length += chunk.length;
      callback(null, chunk);
    },
  });
  return { stream, result: () => ({ digest: `sha256:${hash.digest('hex')}`, length }) };
}

export class ImageArchiveError extends Error {
  override name = 'ImageArchiveError';
}

/**
 * Reads a `docker save` archive (the classic layout of Docker ≤ 24 and the OCI layout of later ones, both
 * with manifest.json) into blobs under `workDir`. Streams: memory does not grow with the image.
 */
export async function readImageArchive(archive: string, workDir: string): Promise<ArchivedImage[]> {
  await mkdir(workDir, { recursive: true });
  const files = new Map<string, ExtractedBlob>();
  const links = new Map<string, string>();
  let index = 0;
  const reader = extract();
  const done = (async () => {
    for await (const entry of reader) {
      const name = posix.normalize(entry.header.name).replace(/^\.\//, '');
      if (entry.header.type === 'symlink' || entry.header.type === 'link') {
        const target = entry.header.linkname ?? '';
        links.set(name, entry.header.type === 'symlink' ? posix.join(posix.dirname(name), target) : target);
        entry.resume();
      } else if (entry.header.type === 'file') {
        const file = join(workDir, `entry-${index++}`);
        const hashing = digesting();
        await pipeline(entry, hashing.stream, createWriteStream(file));
        files.set(name, { ...hashing.result(), file });
      } else {
        entry.resume();
      }
    }
  })();
  try {
    // Both sides at once: a broken archive rejects the reader loop and the pipeline alike.
    await Promise.all([pipeline(createReadStream(archive), reader), done]);
  } catch (error) {
    throw new ImageArchiveError(
      `${archive} is not a readable image archive (tar): ${(error as Error).message}`,
    );
  }

  const resolve = (name: string): ExtractedBlob => {
    let current = posix.normalize(name);
    for (let hops = 0; hops < 10 && links.has(current); hops++)
      current = posix.normalize(links.get(current) as string);
    const blob = files.get(current);
    if (!blob)
      throw new ImageArchiveError(
        `${archive}: manifest.json names ${name}, which the archive does not contain`,
      );
    return blob;
  };
  const manifest = files.get('manifest.json');
  if (!manifest)
    throw new ImageArchiveError(`${archive} has no manifest.json: is it the output of docker save?`);
  const entries = JSON.parse(await readFile(manifest.file, 'utf8')) as ManifestEntry[];
  return entries.map((entry) => {
    const config = resolve(entry.Config);
    return {
      imageId: config.digest,
      repoTags: entry.RepoTags ?? [],
      config,
      layers: entry.Layers.map(resolve),
    };
  });
}

/**
 * Writes an archive that `docker load` accepts (classic layout) from blobs on disk, each checked against
 * its digest and length on the way (see verifiedImageArchive), naming the image's tags.
 */
export async function writeImageArchive(image: ArchivedImage, out: string): Promise<void> {
  await pipeline(verifiedImageArchive(image), createWriteStream(out));
}

/** A blob failed its check while it was streamed: the archive was cut before its manifest. */
export class BlobVerificationError extends ImageArchiveError {
  override name = 'BlobVerificationError';
  readonly digest: string;

  constructor(digest: string, message: string) {
    super(message);
    this.digest = digest;
  }
}

/**
 * The archive `docker load` reads, as a stream, from blobs checked while they stream: each file is
 * opened once (a regular file, no symlink followed), hashed as its bytes go into the tar, and compared
 * with its digest and length before the next begins. The manifest comes last, with the tags the image
 * names (none for the installer). A blob that does not match destroys the stream before the manifest is
 * written, so the engine receives a cut archive and loads nothing (Docker extracts the whole archive before it reads the manifest). There is
 * no file in between that another process could swap.
 */
export function verifiedImageArchive(image: ArchivedImage): Readable {
  const writer = pack();
  const hex = (digest: string) => digest.replace(/^sha256:/, '');
  const add = async (name: string, blob: ExtractedBlob) => {
    const handle = await open(
      blob.file,
      constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
    ).catch((error: NodeJS.ErrnoException) => {
      throw new BlobVerificationError(
        blob.digest,
        `blob ${blob.digest} cannot be opened as a file (${error.code ?? error.message})`,
      );
    });
    try {
      const info = await handle.stat();
      if (!info.isFile() || info.size !== blob.length) {
        throw new BlobVerificationError(
          blob.digest,
          `blob ${blob.digest} is ${info.isFile() ? `${info.size} bytes` : 'not a regular file'}, its signed length is ${blob.length}`,
        );
      }
      const hashing = digesting();
      const entry = writer.entry({ name, size: blob.length, mode: 0o644, mtime: new Date(0) });
      await pipeline(handle.createReadStream({ autoClose: false }), hashing.stream, entry);
      const { digest, length } = hashing.result();
      if (digest !== blob.digest || length !== blob.length) {
        throw new BlobVerificationError(
          blob.digest,
          `blob ${blob.digest} does not match its signed digest (read ${length} bytes with ${digest})`,
        );
      }
    } finally {
      await handle.close();
    }
  };
  void (async () => {
    if (image.imageId !== image.config.digest) {
      throw new BlobVerificationError(
        image.config.digest,
        `the image id ${image.imageId} is not the digest of its config ${image.config.digest}`,
      );
    }
    const layerNames: string[] = [];
    const seen = new Set<string>();
    for (const layer of image.layers) {
      const name = `${hex(layer.digest)}/layer.tar`;
      layerNames.push(name);
      if (seen.has(name)) continue;
      seen.add(name);
      await add(name, layer);
    }
    await add(`${hex(image.config.digest)}.json`, image.config);
    const manifest: ManifestEntry[] = [
      // Tags only where the caller names them: the installer names none (it tags what deployments use).
      {
        Config: `${hex(image.config.digest)}.json`,
        RepoTags: image.repoTags.length > 0 ? image.repoTags : null,
        Layers: layerNames,
      },
    ];
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    writer.entry(
      { name: 'manifest.json', size: manifestBytes.length, mode: 0o644, mtime: new Date(0) },
      manifestBytes,
    );
    writer.finalize();
  })().catch((error: unknown) => writer.destroy(error as Error));
  // A Node stream (tar-stream's are streamx): an error ends it with 'error', which aborts the upload.
  return Readable.from(writer, { objectMode: false });
}
