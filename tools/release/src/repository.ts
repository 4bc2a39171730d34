import { createHash } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  type Artifact,
  artifactTargetPath,
  hashFile,
  type ReleaseCustom,
  type ReleaseImage,
  type ReleaseManifest,
  releaseBlobs,
  releaseCustomSchema,
  releaseTargetPath,
} from '@aico-update/shared';
import { Metadata, type MetadataKind } from '@tufjs/models';
import semver from 'semver';
import type { LayerPublishing, TargetEntry } from './chunked-layers.ts';
import { ReleaseToolError } from './errors.ts';
import { generateKey, type KeyFile, loadKeys, publicKeyJson, signerFor } from './keys.ts';
import { checkReleaseInput } from './release-input.ts';
import { stageImage } from './stage-image.ts';

/*
 * The repository side of TUF for AICO releases. Layout of a repository folder:
 *   public/metadata/  N.root.json, root.json, timestamp.json, N.snapshot.json, N.targets.json (served)
 *   public/targets/   <sha256>.<name> under the target's folder: consistent snapshots (served)
 *   keys/online/      targets, snapshot and timestamp private keys (needed for every publish)
 *   keys/root/        root private keys by default: move them offline and pass --root-keys when rotating
 *   repo.json         settings: key folders and how long each role's metadata stays valid
 * Every publish writes targets first, then targets → snapshot → timestamp metadata, each by rename,
 * so a client never sees a timestamp that points at something not yet there.
 */

export const ROLES = ['root', 'targets', 'snapshot', 'timestamp'] as const;
export type Role = (typeof ROLES)[number];

export { ReleaseToolError };

interface RepoSettings {
  version: 1;
  root_keys_dir: string;
  online_keys_dir: string;
  expires_days: Record<Role, number>;
}

export const DEFAULT_EXPIRES_DAYS: Record<Role, number> = {
  root: 365,
  targets: 90,
  snapshot: 7,
  timestamp: 1,
};

type SignedJson = Record<string, unknown> & { version: number; expires: string };
type RoleKeys = { keyids: string[]; threshold: number };

export interface InitOptions {
  rootKeysDir?: string;
  keyCounts?: Partial<Record<Role, number>>;
  thresholds?: Partial<Record<Role, number>>;
  expiresDays?: Partial<Record<Role, number>>;
}

export interface WriteOptions {
  /** Sign with these keys instead of the role's own: for tests that prove clients reject it. */
  signWith?: Partial<Record<Role, KeyFile[]>>;
  /** Expiry overrides (ISO time), e.g. a date in the past to prove clients reject frozen metadata. */
  expiresAt?: Partial<Record<Role, string>>;
}

export interface AddReleaseInput extends WriteOptions, LayerPublishing {
  component: string;
  version: string;
  channel: string;
  critical?: boolean;
  notes?: string;
  minFromVersion?: string | undefined;
  artifacts: string[];
  /** A frontend's packages, one per platform (served from the home server to that platform's devices). */
  packages?: { platform: string; file: string }[];
  /** A backend: the frontend API versions it serves. A frontend: the one it speaks, the backend it needs. */
  frontendApis?: string[] | undefined;
  frontendApi?: string | undefined;
  needsBackend?: string | undefined;
  /** A backend: the update system versions it needs (a semver range); the updater updates first. */
  needsUpdater?: string | undefined;
  /** A frontend: platforms that update through the app stores. */
  storePlatforms?: string[] | undefined;
  /** Container images, one `docker save` archive per service: published as content-addressed blobs. */
  images?: { service: string; archive: string }[];
  /** Publish even when the version is not above the latest on its channel. */
  force?: boolean;
  releasedAt?: Date;
  /** Changes the manifest before it is signed: for tests that prove clients refuse a publisher's mistake. */
  alterManifest?: (manifest: ReleaseManifest) => ReleaseManifest;
}

export interface PublishedRelease extends ReleaseCustom {
  target: string;
}

/** TUF wants expiry times without fractional seconds; some clients reject them. */
export function isoSeconds(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function daysFromNow(days: number): string {
  return isoSeconds(new Date(Date.now() + days * 86_400_000));
}

async function writeAtomic(path: string, data: string | Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode: 0o644 });
  await rename(tmp, path);
}

async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(path, 'utf8')) as T;
}

type FileMeta = ReturnType<typeof bytesMeta>;

function bytesMeta(bytes: string, version: number) {
  return {
    version,
    length: Buffer.byteLength(bytes),
    hashes: { sha256: createHash('sha256').update(bytes).digest('hex') },
  };
}

/** Creates a repository: keys for every role, version 1 of every role's metadata, no targets yet. */
export async function initRepository(dir: string, options: InitOptions = {}): Promise<Repository> {
  const root = resolve(dir);
  try {
    await stat(join(root, 'repo.json'));
    throw new ReleaseToolError('REPO_EXISTS', `a repository already exists at ${root}; use another folder`);
  } catch (error) {
    if (error instanceof ReleaseToolError) throw error;
  }
  const settings: RepoSettings = {
    version: 1,
    root_keys_dir: resolve(options.rootKeysDir ?? join(root, 'keys', 'root')),
    online_keys_dir: join(root, 'keys', 'online'),
    expires_days: { ...DEFAULT_EXPIRES_DAYS, ...options.expiresDays },
  };
  const keys: Record<string, unknown> = {};
  const roles: Record<string, RoleKeys> = {};
  for (const role of ROLES) {
    const count = options.keyCounts?.[role] ?? 1;
    const threshold = options.thresholds?.[role] ?? 1;
    if (
      !Number.isInteger(count) ||
      count < 1 ||
      !Number.isInteger(threshold) ||
      threshold < 1 ||
      threshold > count
    ) {
      throw new ReleaseToolError(
        'INVALID_ARGUMENT',
        `role ${role}: threshold ${threshold} with ${count} key(s) is not possible; need 1 ≤ threshold ≤ keys`,
      );
    }
    roles[role] = { keyids: [], threshold };
    for (let i = 0; i < count; i++) {
      const key = generateKey();
      keys[key.keyid] = publicKeyJson(key);
      roles[role].keyids.push(key.keyid);
      const keyDir = role === 'root' ? settings.root_keys_dir : settings.online_keys_dir;
      await mkdir(keyDir, { recursive: true, mode: 0o700 });
      await writeFile(join(keyDir, `${role}-${key.keyid.slice(0, 12)}.json`), JSON.stringify(key, null, 2), {
        mode: 0o600,
      });
    }
  }
  await writeAtomic(join(root, 'repo.json'), JSON.stringify(settings, null, 2));
  const repo = new Repository(root, settings, []);
  const rootSigned: SignedJson = {
    _type: 'root',
    spec_version: '1.0.31',
    version: 1,
    expires: daysFromNow(settings.expires_days.root),
    consistent_snapshot: true,
    keys,
    roles,
  };
  await repo.writeRoot(rootSigned, [], {});
  await repo.publishTargets(
    { _type: 'targets', spec_version: '1.0.31', version: 0, expires: '', targets: {} },
    {},
  );
  return repo;
}

export async function openRepository(
  dir: string,
  options: { extraKeyDirs?: string[] } = {},
): Promise<Repository> {
  const root = resolve(dir);
  let settings: RepoSettings;
  try {
    settings = await readJson<RepoSettings>(join(root, 'repo.json'));
  } catch {
    throw new ReleaseToolError(
      'REPO_NOT_FOUND',
      `no repository at ${root} (repo.json missing); create one with: aico-release init ${dir}`,
    );
  }
  return new Repository(root, settings, options.extraKeyDirs ?? []);
}

export class Repository {
  readonly dir: string;
  readonly metadataDir: string;
  readonly targetsDir: string;
  readonly #settings: RepoSettings;
  readonly #extraKeyDirs: string[];

  constructor(dir: string, settings: RepoSettings, extraKeyDirs: string[]) {
    this.dir = dir;
    this.metadataDir = join(dir, 'public', 'metadata');
    this.targetsDir = join(dir, 'public', 'targets');
    this.#settings = settings;
    this.#extraKeyDirs = extraKeyDirs;
  }

  /** The folder the HTTPS server serves: `metadata/` and `targets/` below it. */
  get publicDir(): string {
    return join(this.dir, 'public');
  }

  get trustedRootPath(): string {
    return join(this.metadataDir, '1.root.json');
  }

  async rootVersion(): Promise<number> {
    const versions = (await readdir(this.metadataDir))
      .map((name) => /^(\d+)\.root\.json$/.exec(name)?.[1])
      .filter((v): v is string => v !== undefined)
      .map(Number);
    return Math.max(...versions);
  }

  async readRoot(): Promise<SignedJson> {
    const doc = await readJson<{ signed: SignedJson }>(
      join(this.metadataDir, `${await this.rootVersion()}.root.json`),
    );
    return doc.signed;
  }

  async readTimestamp(): Promise<SignedJson> {
    return (await readJson<{ signed: SignedJson }>(join(this.metadataDir, 'timestamp.json'))).signed;
  }

  async readSnapshot(): Promise<SignedJson> {
    const timestamp = await this.readTimestamp();
    const version = (timestamp.meta as Record<string, { version: number }>)['snapshot.json']?.version;
    return (await readJson<{ signed: SignedJson }>(join(this.metadataDir, `${version}.snapshot.json`)))
      .signed;
  }

  async readTargets(): Promise<SignedJson & { targets: Record<string, TargetEntry> }> {
    const snapshot = await this.readSnapshot();
    const version = (snapshot.meta as Record<string, { version: number }>)['targets.json']?.version;
    const doc = await readJson<{ signed: SignedJson & { targets: Record<string, TargetEntry> } }>(
      join(this.metadataDir, `${version}.targets.json`),
    );
    return doc.signed;
  }

  /** Every published release, read from the signed targets metadata. */
  async releases(component?: string): Promise<PublishedRelease[]> {
    const targets = await this.readTargets();
    const out: PublishedRelease[] = [];
    for (const [target, entry] of Object.entries(targets.targets)) {
      const parsed = releaseCustomSchema.safeParse(entry.custom?.aico);
      if (parsed.success && (!component || parsed.data.component === component)) {
        out.push({ ...parsed.data, target });
      }
    }
    return out.sort((a, b) => a.component.localeCompare(b.component) || semver.compare(a.version, b.version));
  }

  async addRelease(input: AddReleaseInput): Promise<ReleaseManifest> {
    const [manifest] = await this.addReleases([input], input);
    return manifest as ReleaseManifest;
  }

  /** Publishes several releases in one new targets version (one signature round, e.g. importing history). */
  async addReleases(
    inputs: readonly AddReleaseInput[],
    options: WriteOptions = {},
  ): Promise<ReleaseManifest[]> {
    const targets = await this.readTargets();
    const published = await this.releases();
    const manifests: ReleaseManifest[] = [];
    for (const input of inputs) {
      const manifest = await this.#stageRelease(targets, published, input);
      published.push({ ...manifest, target: releaseTargetPath(manifest.component, manifest.version) });
      published.sort((a, b) => semver.compare(a.version, b.version));
      manifests.push(manifest);
    }
    await this.publishTargets(targets, options);
    return manifests;
  }

  async #stageRelease(
    targets: SignedJson & { targets: Record<string, TargetEntry> },
    published: readonly PublishedRelease[],
    input: AddReleaseInput,
  ): Promise<ReleaseManifest> {
    const { component, channel, files, zstdLevel, custom: compat } = checkReleaseInput(input, published);

    const artifacts: Artifact[] = [];
    for (const { file, platform } of files) {
      const name = basename(file);
      let info: { length: number; sha256: string };
      try {
        info = await hashFile(file);
      } catch {
        throw new ReleaseToolError('ARTIFACT_NOT_FOUND', `artifact ${file} cannot be read; check the path`);
      }
      const target = artifactTargetPath(component, input.version, name);
      await this.#storeTarget(target, info.sha256, (dest) => copyFile(file, dest));
      targets.targets[target] = { length: info.length, hashes: { sha256: info.sha256 } };
      artifacts.push({ name, target, ...info, ...(platform ? { platform } : {}) });
    }
    const images: ReleaseImage[] = [];
    for (const { service, archive } of input.images ?? []) {
      images.push(
        await stageImage(
          targets.targets,
          { service, archive, zstdLevel, workParent: this.dir },
          (target, sha, write) => this.#storeTarget(target, sha, write),
        ),
      );
    }
    const blobBytes = releaseBlobs({ images }).reduce((sum, b) => sum + b.length, 0);
    const manifest: ReleaseManifest = {
      schema: 1,
      component,
      version: input.version,
      channel,
      critical: input.critical ?? false,
      notes: input.notes ?? '',
      ...(input.minFromVersion ? { min_from_version: input.minFromVersion } : {}),
      ...compat,
      released_at: isoSeconds(input.releasedAt ?? new Date()),
      size_bytes: artifacts.reduce((sum, a) => sum + a.length, 0) + blobBytes,
      artifacts,
      images,
    };
    const signed = input.alterManifest ? input.alterManifest(manifest) : manifest;
    const { schema: _schema, artifacts: _artifacts, images: _images, ...custom } = signed;
    const bytes = Buffer.from(`${JSON.stringify(signed, null, 2)}\n`);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const target = releaseTargetPath(component, input.version);
    await this.#storeTarget(target, sha256, (dest) => writeFile(dest, bytes));
    targets.targets[target] = {
      length: Buffer.byteLength(bytes),
      hashes: { sha256 },
      custom: { aico: custom },
    };
    return signed;
  }

  /**
   * Withdraws a published release: its manifest target leaves the signed targets, so clients no longer
   * offer, download or install it (its blobs stay: other releases may share them).
   */
  async withdraw(component: string, version: string, options: WriteOptions = {}): Promise<void> {
    const targets = await this.readTargets();
    const target = releaseTargetPath(component, version);
    if (!targets.targets[target]) {
      throw new ReleaseToolError(
        'RELEASE_NOT_FOUND',
        `${component} ${version} is not published (no target ${target})`,
      );
    }
    delete targets.targets[target];
    for (const path of Object.keys(targets.targets)) {
      if (path.startsWith(`${artifactTargetPath(component, version, '')}`)) delete targets.targets[path];
    }
    await this.publishTargets(targets, options);
  }

  /** Re-signs snapshot and timestamp (and targets with `targets: true`) with fresh expiry times. */
  async refresh(options: WriteOptions & { targets?: boolean } = {}): Promise<void> {
    if (options.targets) {
      await this.publishTargets(await this.readTargets(), options);
    } else {
      await this.publishSnapshot(options);
    }
  }

  /**
   * Replaces the keys of a role with new ones and publishes root N+1, signed by the old root keys and
   * (for a root rotation) the new ones too, then re-signs what the new key signs.
   */
  async rotate(
    role: Role,
    options: { count?: number; threshold?: number } & WriteOptions = {},
  ): Promise<KeyFile[]> {
    const root = await this.readRoot();
    const roles = root.roles as Record<string, RoleKeys>;
    const current = roles[role];
    if (!current)
      throw new ReleaseToolError('INVALID_ARGUMENT', `unknown role ${role}; roles are ${ROLES.join(', ')}`);
    const count = options.count ?? current.keyids.length;
    const threshold = options.threshold ?? Math.min(current.threshold, count);
    const oldRootSigners = await this.signingKeys('root', root);
    const fresh = Array.from({ length: count }, () => generateKey());
    const keyDir = role === 'root' ? this.#settings.root_keys_dir : this.#settings.online_keys_dir;
    await mkdir(keyDir, { recursive: true, mode: 0o700 });
    for (const key of fresh) {
      await writeFile(join(keyDir, `${role}-${key.keyid.slice(0, 12)}.json`), JSON.stringify(key, null, 2), {
        mode: 0o600,
      });
    }
    roles[role] = { keyids: fresh.map((k) => k.keyid), threshold };
    const keys = root.keys as Record<string, unknown>;
    for (const key of fresh) keys[key.keyid] = publicKeyJson(key);
    const stillUsed = new Set(Object.values(roles).flatMap((r) => r.keyids));
    for (const keyid of Object.keys(keys)) if (!stillUsed.has(keyid)) delete keys[keyid];
    root.version += 1;
    root.expires = options.expiresAt?.root ?? daysFromNow(this.#settings.expires_days.root);
    await this.writeRoot(root, oldRootSigners, options);
    if (role === 'targets') await this.publishTargets(await this.readTargets(), options);
    else if (role === 'snapshot' || role === 'timestamp') await this.publishSnapshot(options);
    return fresh;
  }

  /** Signs and writes targets N+1, then snapshot and timestamp. */
  async publishTargets(targets: SignedJson, options: WriteOptions): Promise<void> {
    targets.version += 1;
    targets.expires = options.expiresAt?.targets ?? daysFromNow(this.#settings.expires_days.targets);
    const bytes = await this.#sign('targets', targets, options);
    await writeAtomic(join(this.metadataDir, `${targets.version}.targets.json`), bytes);
    await this.publishSnapshot(options, bytesMeta(bytes, targets.version));
  }

  async publishSnapshot(options: WriteOptions, targetsMeta?: FileMeta): Promise<void> {
    const snapshot = await this.#publishMetaRole('snapshot', 'targets.json', options, targetsMeta);
    await this.publishTimestamp(options, snapshot);
  }

  async publishTimestamp(options: WriteOptions, snapshotMeta?: FileMeta): Promise<void> {
    await this.#publishMetaRole('timestamp', 'snapshot.json', options, snapshotMeta);
  }

  /**
   * Signs version N+1 of a role that pins the file below it (snapshot pins targets, timestamp pins
   * snapshot) and returns the new file's meta for the role above. Without `childMeta` the pin is kept.
   */
  async #publishMetaRole(
    role: 'snapshot' | 'timestamp',
    child: 'targets.json' | 'snapshot.json',
    options: WriteOptions,
    childMeta: FileMeta | undefined,
  ): Promise<FileMeta> {
    let version = 0;
    let meta = childMeta;
    try {
      const previous = role === 'snapshot' ? await this.readSnapshot() : await this.readTimestamp();
      version = previous.version;
      meta ??= (previous.meta as Record<string, FileMeta>)[child];
    } catch {
      // The first version of this role in a new repository.
    }
    const signed: SignedJson = {
      _type: role,
      spec_version: '1.0.31',
      version: version + 1,
      expires: options.expiresAt?.[role] ?? daysFromNow(this.#settings.expires_days[role]),
      meta: { [child]: meta },
    };
    const bytes = await this.#sign(role, signed, options);
    // Consistent snapshots: snapshot is versioned in its name; timestamp is always timestamp.json.
    await writeAtomic(
      join(this.metadataDir, role === 'snapshot' ? `${signed.version}.snapshot.json` : 'timestamp.json'),
      bytes,
    );
    return bytesMeta(bytes, signed.version);
  }

  /** Writes root N (and root.json, the copy clients ship as their initial trusted root). */
  async writeRoot(root: SignedJson, extraSigners: KeyFile[], options: WriteOptions): Promise<void> {
    const bytes = await this.#sign('root', root, options, extraSigners);
    await writeAtomic(join(this.metadataDir, `${root.version}.root.json`), bytes);
    await writeAtomic(join(this.metadataDir, 'root.json'), bytes);
  }

  /** The private keys this repository holds for a role, enough to meet its threshold, or a clear error. */
  async signingKeys(role: Role, root?: SignedJson): Promise<KeyFile[]> {
    const rootSigned = root ?? (await this.readRoot());
    const { keyids, threshold } = (rootSigned.roles as Record<string, RoleKeys>)[role] as RoleKeys;
    const available = await loadKeys([
      this.#settings.root_keys_dir,
      this.#settings.online_keys_dir,
      ...this.#extraKeyDirs,
    ]);
    const keys = keyids.map((id) => available.get(id)).filter((k): k is KeyFile => k !== undefined);
    if (keys.length < threshold) {
      const where = role === 'root' ? this.#settings.root_keys_dir : this.#settings.online_keys_dir;
      throw new ReleaseToolError(
        'KEY_MISSING',
        `role ${role} needs ${threshold} signature(s) from keys ${keyids.map((k) => k.slice(0, 12)).join(', ')}; ` +
          `found ${keys.length} of them in ${where}${this.#extraKeyDirs.length ? ` or ${this.#extraKeyDirs.join(', ')}` : ''}. ` +
          `Pass the folder holding the right keys with --keys DIR.`,
      );
    }
    return keys;
  }

  async #sign(
    role: Role,
    signed: SignedJson,
    options: WriteOptions,
    extraSigners: KeyFile[] = [],
  ): Promise<string> {
    const signers = options.signWith?.[role] ?? [
      ...(await this.signingKeys(role, role === 'root' ? signed : undefined)),
    ];
    for (const extra of extraSigners) if (!signers.some((k) => k.keyid === extra.keyid)) signers.push(extra);
    const kind = role as MetadataKind.Root;
    const metadata = Metadata.fromJSON(kind, { signed, signatures: [] } as never);
    for (const key of signers) metadata.sign(signerFor(key), true);
    return `${JSON.stringify(metadata.toJSON(), null, 1)}\n`;
  }

  async #storeTarget(
    target: string,
    sha256: string,
    write: (dest: string) => Promise<unknown>,
  ): Promise<void> {
    const dest = join(this.targetsDir, dirname(target), `${sha256}.${basename(target)}`);
    await mkdir(dirname(dest), { recursive: true });
    const tmp = `${dest}.tmp-${process.pid}`;
    await write(tmp);
    await rename(tmp, dest);
  }
}
