import { parseArgs } from 'node:util';
import { AppError } from '@aico-update/shared';
import { initRepository, openRepository, ReleaseToolError, ROLES, type Role } from './repository.ts';
import { serveRepository } from './serve.ts';

const USAGE = `aico-release — publish AICO releases as a TUF repository

usage:
  aico-release init REPO [--root-keys DIR] [--keys ROLE=N]... [--threshold ROLE=N]... [--expires ROLE=DAYS]...
      Create a repository with ed25519 keys. Root keys go to REPO/keys/root unless --root-keys names
      another folder (keep them offline); online keys (targets, snapshot, timestamp) to REPO/keys/online.
  aico-release add REPO --component C --version V [--channel stable|beta|dev] [--critical]
                   [--notes TEXT | --notes-file F] [--min-from V] [--force] [--keys DIR]
                   [--image SERVICE=ARCHIVE]... [--zstd-level N] [--plain-layers]
                   [--package PLATFORM=FILE]... [FILE...]
                   [--frontend-apis A,B] (backend: the frontend API versions it serves)
                   [--needs-updater RANGE] (backend: the update system versions it needs)
                   [--frontend-api A] [--needs-backend RANGE] [--store PLATFORM]... (frontend)
      Publish a release of component C (backend, frontend, updater) with its artifact files and, for
      each --image, a service's container image from a docker save archive, published as
      content-addressed layer blobs (a layer already published is reused: clients fetch only new ones).
      Each new layer is also published chunked: a pack of zstd frames (--zstd-level, default 19, about
      0.3 s per MiB of layer on two cores) and a chunk index, from which clients fetch only the chunks
      they do not hold. --plain-layers publishes the layer blobs alone, as releases before chunking did.
  aico-release withdraw REPO --component C --version V [--keys DIR]
      Withdraw a published release: clients stop offering, downloading and installing it (an installer
      refuses it with RELEASE_WITHDRAWN even when it is already downloaded).
  aico-release refresh REPO [--targets] [--keys DIR]
      Re-sign snapshot and timestamp (and targets with --targets) before they expire. Run it from cron:
      timestamp metadata is valid for 1 day by default.
  aico-release rotate REPO --role ROLE [--count N] [--threshold N] [--keys DIR]
      Replace a role's keys; publishes root N+1 signed by the old and new root keys.
  aico-release list REPO
      Show the published releases.
  aico-release serve REPO [--host H] [--port P] [--cert F --key F] [--insecure-http]
      Serve the repository over HTTPS (a self-signed certificate is made in REPO/tls when none is given;
      clients trust it with update_server.ca_file = REPO/tls/cert.pem). --insecure-http serves plain HTTP.

Clients use metadata URL <server>/metadata and targets URL <server>/targets, and ship
REPO/public/metadata/1.root.json as their initial trusted root.`;

function pairs(values: string[] | undefined, flag: string): Partial<Record<Role, number>> {
  const out: Partial<Record<Role, number>> = {};
  for (const value of values ?? []) {
    const match = /^([a-z]+)=(\d+)$/.exec(value);
    if (!match || !ROLES.includes(match[1] as Role)) {
      throw new ReleaseToolError(
        'INVALID_ARGUMENT',
        `${flag} ${value}: expected ROLE=N with ROLE one of ${ROLES.join(', ')}`,
      );
    }
    out[match[1] as Role] = Number(match[2]);
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      'root-keys': { type: 'string' },
      keys: { type: 'string', multiple: true },
      threshold: { type: 'string', multiple: true },
      expires: { type: 'string', multiple: true },
      component: { type: 'string' },
      version: { type: 'string' },
      channel: { type: 'string', default: 'stable' },
      critical: { type: 'boolean', default: false },
      notes: { type: 'string' },
      'notes-file': { type: 'string' },
      'min-from': { type: 'string' },
      force: { type: 'boolean', default: false },
      image: { type: 'string', multiple: true },
      'plain-layers': { type: 'boolean', default: false },
      'zstd-level': { type: 'string' },
      package: { type: 'string', multiple: true },
      'frontend-apis': { type: 'string' },
      'frontend-api': { type: 'string' },
      'needs-backend': { type: 'string' },
      'needs-updater': { type: 'string' },
      store: { type: 'string', multiple: true },
      targets: { type: 'boolean', default: false },
      role: { type: 'string' },
      count: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '8443' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'insecure-http': { type: 'boolean', default: false },
    },
  });
  const [repoDir, ...files] = positionals;
  if (!repoDir)
    throw new ReleaseToolError(
      'INVALID_ARGUMENT',
      `${command}: name the repository folder (see aico-release help)`,
    );
  // In `init`, --keys ROLE=N counts keys; elsewhere --keys names extra folders holding private keys.
  const keyDirs = command === 'init' ? [] : (values.keys ?? []);

  switch (command) {
    case 'init': {
      const repo = await initRepository(repoDir, {
        ...(values['root-keys'] ? { rootKeysDir: values['root-keys'] } : {}),
        keyCounts: pairs(values.keys, '--keys'),
        thresholds: pairs(values.threshold, '--threshold'),
        expiresDays: pairs(values.expires, '--expires'),
      });
      console.log(`created repository ${repo.dir}`);
      console.log(`initial trusted root for clients: ${repo.trustedRootPath}`);
      console.log(
        'root keys are the keys to your users: move them offline and pass --keys DIR when rotating',
      );
      return 0;
    }
    case 'add': {
      if (!values.component || !values.version) {
        throw new ReleaseToolError('INVALID_ARGUMENT', 'add: --component and --version are required');
      }
      const notes = values['notes-file']
        ? await (await import('node:fs/promises')).readFile(values['notes-file'], 'utf8')
        : values.notes;
      const level = values['zstd-level'];
      if (level !== undefined && !/^\d+$/.test(level)) {
        throw new ReleaseToolError(
          'INVALID_ARGUMENT',
          `--zstd-level ${level}: expected a whole number from 1 to 22`,
        );
      }
      const repo = await openRepository(repoDir, { extraKeyDirs: keyDirs });
      const manifest = await repo.addRelease({
        component: values.component,
        version: values.version,
        channel: values.channel ?? 'stable',
        critical: values.critical ?? false,
        notes: notes ?? '',
        minFromVersion: values['min-from'],
        force: values.force ?? false,
        artifacts: files,
        packages: (values.package ?? []).map((spec) => {
          const match = /^([^=]+)=(.+)$/.exec(spec);
          if (!match)
            throw new ReleaseToolError('INVALID_ARGUMENT', `--package ${spec}: expected PLATFORM=FILE`);
          return { platform: match[1] as string, file: match[2] as string };
        }),
        frontendApis: values['frontend-apis']
          ?.split(',')
          .map((a) => a.trim())
          .filter(Boolean),
        frontendApi: values['frontend-api'],
        needsBackend: values['needs-backend'],
        needsUpdater: values['needs-updater'],
        storePlatforms: values.store,
        layers: values['plain-layers'] ? 'plain' : 'chunked',
        ...(level !== undefined ? { zstdLevel: Number(level) } : {}),
        images: (values.image ?? []).map((spec) => {
          const match = /^([^=]+)=(.+)$/.exec(spec);
          if (!match)
            throw new ReleaseToolError(
              'INVALID_ARGUMENT',
              `--image ${spec}: expected SERVICE=ARCHIVE (docker save output)`,
            );
          return { service: match[1] as string, archive: match[2] as string };
        }),
      });
      console.log(
        `published ${manifest.component} ${manifest.version} on ${manifest.channel}${manifest.critical ? ' (critical)' : ''}: ` +
          `${manifest.artifacts.length} artifact(s), ${manifest.images.length} image(s), ${manifest.size_bytes} bytes`,
      );
      return 0;
    }
    case 'withdraw': {
      if (!values.component || !values.version) {
        throw new ReleaseToolError('INVALID_ARGUMENT', 'withdraw: --component and --version are required');
      }
      const repo = await openRepository(repoDir, { extraKeyDirs: keyDirs });
      await repo.withdraw(values.component, values.version);
      console.log(`withdrew ${values.component} ${values.version}`);
      return 0;
    }
    case 'refresh': {
      const repo = await openRepository(repoDir, { extraKeyDirs: keyDirs });
      await repo.refresh({ targets: values.targets ?? false });
      const timestamp = await repo.readTimestamp();
      console.log(`re-signed; timestamp version ${timestamp.version} expires ${timestamp.expires}`);
      return 0;
    }
    case 'rotate': {
      const role = values.role as Role;
      if (!ROLES.includes(role)) {
        throw new ReleaseToolError('INVALID_ARGUMENT', `rotate: --role must be one of ${ROLES.join(', ')}`);
      }
      const repo = await openRepository(repoDir, { extraKeyDirs: keyDirs });
      const keys = await repo.rotate(role, values.count ? { count: Number(values.count) } : {});
      console.log(
        `rotated ${role}: new key(s) ${keys.map((k) => k.keyid.slice(0, 12)).join(', ')}; root version ${await repo.rootVersion()}`,
      );
      return 0;
    }
    case 'list': {
      const repo = await openRepository(repoDir);
      for (const r of await repo.releases()) {
        console.log(
          `${r.component}\t${r.version}\t${r.channel}\t${r.critical ? 'critical' : '-'}\t${r.size_bytes}\t${r.released_at}`,
        );
      }
      return 0;
    }
    case 'serve': {
      const repo = await openRepository(repoDir);
      const { readFile } = await import('node:fs/promises');
      const tls =
        values.cert && values.key
          ? { cert: await readFile(values.cert, 'utf8'), key: await readFile(values.key, 'utf8') }
          : undefined;
      const server = await serveRepository({
        publicDir: repo.publicDir,
        tlsDir: `${repo.dir}/tls`,
        host: values.host ?? '127.0.0.1',
        port: Number(values.port),
        insecureHttp: values['insecure-http'] ?? false,
        ...(tls ? { tls } : {}),
      });
      console.log(`serving ${repo.publicDir}`);
      console.log(`metadata URL: ${server.url}/metadata`);
      console.log(`targets URL:  ${server.url}/targets`);
      if (server.caFile) console.log(`CA file:      ${server.caFile}`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
      return 0;
    }
    default:
      throw new ReleaseToolError('INVALID_ARGUMENT', `unknown command "${command}"; see aico-release help`);
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(`aico-release: ${error instanceof AppError ? error.message : (error as Error).stack}`);
      process.exit(error instanceof AppError ? 1 : 70);
    },
  );
}
