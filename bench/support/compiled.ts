/*
 * The workspace compiled as the images run it (scripts/compile.sh), for benchmarks that measure a
 * service's process: a process running the TypeScript sources carries Node's type stripper, which the
 * deployed services do not. Third-party packages are linked from the workspace's node_modules, ours
 * point at their compiled copies.
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');

export interface CompiledWorkspace {
  dir: string;
  /** Compiles a standalone script (a benchmark's child) into the tree, so it resolves the compiled packages. */
  addScript(source: string): Promise<string>;
}

export async function compileWorkspace(dir: string): Promise<CompiledWorkspace> {
  await run('sh', ['scripts/compile.sh', dir], { cwd: ROOT });
  const modules = join(dir, 'node_modules');
  await mkdir(join(modules, '@aico-update'), { recursive: true });
  for (const entry of await readdir(join(ROOT, 'node_modules'))) {
    if (entry !== '@aico-update') await symlink(join(ROOT, 'node_modules', entry), join(modules, entry));
  }
  for (const folder of ['libs', 'services', 'tools']) {
    for (const name of await readdir(join(dir, folder))) {
      const manifest = JSON.parse(await readFile(join(dir, folder, name, 'package.json'), 'utf8'));
      await symlink(join(dir, folder, name), join(modules, manifest.name as string));
    }
  }
  return {
    dir,
    async addScript(source) {
      const file = join(dir, `${basename(source, '.ts')}.mjs`);
      // Node's own type stripping, done once here instead of in the measured process.
      process.removeAllListeners('warning'); // stripTypeScriptTypes is marked experimental
      await writeFile(file, stripTypeScriptTypes(await readFile(source, 'utf8')));
      return file;
    },
  };
}

/** The Node flags a service's container runs with: its docker-compose.yml `command` up to the script. */
export async function composeNodeFlags(service: string): Promise<string[]> {
  const compose = parse(await readFile(join(ROOT, 'docker-compose.yml'), 'utf8'));
  const command: string[] | undefined = compose.services[service]?.command;
  if (!command) return [];
  if (command[0] !== 'node' || command.at(-1) !== 'main.js')
    throw new Error(`${service}: expected a command [node, ...flags, main.js] in docker-compose.yml`);
  return command.slice(1, -1);
}
