import { mkdir, readdir, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '@aico-update/shared';

/*
 * The verified blob cache: `blobs/<sha256>` holds only files whose bytes were verified against signed
 * metadata (they arrive by rename from `partials/`), so presence means valid. `manifests/` keeps each
 * downloaded release's verified manifest, which says which blobs are still needed. `indexes/<sha256>`
 * holds the verified chunk index of the layer `blobs/<sha256>` (or of one being rebuilt): a cached
 * layer with its index is where a chunk delta finds the chunks it does not fetch.
 */
export class BlobStore {
  readonly root: string;
  readonly blobsDir: string;
  readonly partialsDir: string;
  readonly manifestsDir: string;
  readonly indexesDir: string;

  constructor(root: string) {
    this.root = root;
    this.blobsDir = join(root, 'blobs');
    this.partialsDir = join(root, 'partials');
    this.manifestsDir = join(root, 'manifests');
    this.indexesDir = join(root, 'indexes');
  }

  async init(): Promise<void> {
    for (const dir of [this.blobsDir, this.partialsDir, this.manifestsDir, this.indexesDir])
      await mkdir(dir, { recursive: true });
  }

  pathOf(sha256: string): string {
    return join(this.blobsDir, sha256);
  }

  async cached(): Promise<Set<string>> {
    return new Set((await readdir(this.blobsDir)).filter((name) => /^[0-9a-f]{64}$/.test(name)));
  }

  /** The chunk index of layer `sha256`. */
  indexPathOf(sha256: string): string {
    return join(this.indexesDir, sha256);
  }

  /** Layers whose chunk index is cached (named by the layer's sha256). */
  async cachedIndexes(): Promise<Set<string>> {
    return new Set((await readdir(this.indexesDir)).filter((name) => /^[0-9a-f]{64}$/.test(name)));
  }

  async removeIndex(sha256: string): Promise<void> {
    await rm(this.indexPathOf(sha256), { force: true });
  }

  async partialBytes(): Promise<number> {
    let total = 0;
    for (const name of await readdir(this.partialsDir))
      total += (await stat(join(this.partialsDir, name))).size;
    return total;
  }

  async sizeBytes(): Promise<number> {
    let total = 0;
    for (const name of await this.cached()) total += (await stat(this.pathOf(name))).size;
    return total;
  }

  async freeBytes(): Promise<number> {
    const fs = await statfs(this.root);
    return fs.bavail * fs.bsize;
  }

  async remove(sha256: string): Promise<void> {
    await rm(this.pathOf(sha256), { force: true });
  }

  manifestPath(component: string, version: string): string {
    return join(this.manifestsDir, `${component}@${version}.json`);
  }

  async saveManifest(component: string, version: string, bytes: Buffer): Promise<void> {
    const path = this.manifestPath(component, version);
    await writeFileAtomic(path, bytes);
  }

  async removeManifest(component: string, version: string): Promise<void> {
    await rm(this.manifestPath(component, version), { force: true });
  }

  async manifestNames(): Promise<{ component: string; version: string }[]> {
    return (await readdir(this.manifestsDir))
      .map((name) => /^([a-z]+)@(.+)\.json$/.exec(name))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ component: m[1] as string, version: m[2] as string }));
  }
}
