/*
 * npm run bench:footprint — the deployed stack at rest (real Docker Engine, Compose v1): images built
 * from the Dockerfile, `up -d` to every service healthy, then RSS and CPU per container, sampled five
 * times over ten seconds after a minute of idling. Baseline in the same run: a container of the same
 * Node base image doing nothing (`bare_node`).
 *   rss_mib_<service>  idle_cpu_pct_<service>  image_mib_<service>  up_to_healthy_s
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { initRepository } from '@aico-update/release';
import { docker, freePort, makeTempDir } from '@aico-update/shared/testing';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
const project = `aicofoot${randomBytes(3).toString('hex')}`;
const services = ['checker', 'downloader', 'installer', 'bus-gateway', 'redis', 'nats'];
const files = ['-f', 'docker-compose.yml', '-f', 'infra/compose/broker.yml', '--profile', 'dev'];

const dir = await makeTempDir('footprint');
await chmod(dir, 0o755);
const repo = await initRepository(join(dir, 'repo'));
await chmod(repo.dir, 0o755);
const env = {
  ...process.env,
  COMPOSE_PROJECT_NAME: project,
  AICO_DEV_REPO: repo.dir,
  AICO_UPDATE_SERVER_METADATA_URL: 'http://update-server:8443/metadata',
  AICO_UPDATE_SERVER_ALLOW_INSECURE_HTTP: 'true',
  AICO_TRUSTED_ROOT_FILE: repo.trustedRootPath,
  AICO_BUS_PUB_PORT: String(await freePort()),
  AICO_BUS_SUB_PORT: String(await freePort()),
  AICO_CONTROL_PORT: String(await freePort()),
};
const compose = (...args: string[]) =>
  run('docker-compose', [...files, ...args], { cwd: root, env, maxBuffer: 32 * 1024 * 1024 });

await run('bash', [resolve(root, 'infra/base-images.sh')], { cwd: root });
await compose('build', '-q');
const bare = `${project}-bare-node`;
try {
  const started = performance.now();
  await compose('up', '-d');
  const container = (service: string) => `${project}_${service}_1`;
  for (;;) {
    const states = await Promise.all(
      [...services, 'update-server'].map((s) =>
        docker('inspect', '--format', '{{.State.Health.Status}}', container(s)),
      ),
    );
    if (states.every((s) => s === 'healthy')) break;
    if (performance.now() - started > 300_000) throw new Error(`not healthy: ${states.join(', ')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  const upToHealthy = (performance.now() - started) / 1000;
  await docker(
    'run',
    '-d',
    '--init',
    '--name',
    bare,
    'node:24-bookworm-slim',
    'node',
    '-e',
    'setInterval(() => {}, 1 << 30)',
  );

  await new Promise((r) => setTimeout(r, 60_000)); // idle: startup checks and first scrapes are over
  const names = [...services.map(container), bare];
  const samples = new Map<string, { rss: number[]; cpu: number[] }>();
  for (let i = 0; i < 5; i++) {
    const lines = await docker(
      'stats',
      '--no-stream',
      '--format',
      '{{.Name}}|{{.MemUsage}}|{{.CPUPerc}}',
      ...names,
    );
    for (const line of lines.split('\n')) {
      const [name, mem, cpu] = line.split('|') as [string, string, string];
      const used = mem.split('/')[0]?.trim() ?? ''; // "93.8MiB / 23.5GiB": usage / limit
      const value = Number.parseFloat(used);
      const mib = used.endsWith('GiB') ? value * 1024 : used.endsWith('KiB') ? value / 1024 : value;
      const entry = samples.get(name) ?? { rss: [], cpu: [] };
      entry.rss.push(mib);
      entry.cpu.push(Number.parseFloat(cpu));
      samples.set(name, entry);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  const rows: string[] = [];
  for (const service of [...services, 'bare_node']) {
    const name = service === 'bare_node' ? bare : container(service);
    const s = samples.get(name) ?? { rss: [0], cpu: [0] };
    const key = service.replace('-', '_');
    const image =
      service === 'bare_node'
        ? 'node:24-bookworm-slim'
        : service === 'redis'
          ? 'redis:7-bookworm'
          : service === 'nats'
            ? 'nats:2.9-alpine'
            : `aico-update/${service}:local`;
    const imageMib = Number(await docker('image', 'inspect', '--format', '{{.Size}}', image)) / 1048576;
    rows.push(
      `${service.padEnd(12)} ${mean(s.rss).toFixed(1).padStart(8)} MiB ${mean(s.cpu).toFixed(2).padStart(6)} % ${imageMib.toFixed(0).padStart(6)} MiB`,
    );
    console.log(`rss_mib_${key}=${mean(s.rss).toFixed(1)}`);
    console.log(`idle_cpu_pct_${key}=${mean(s.cpu).toFixed(2)}`);
    console.log(`image_mib_${key}=${imageMib.toFixed(0)}`);
  }
  console.log(`up_to_healthy_s=${upToHealthy.toFixed(1)}`);
  console.log(`\nservice           RSS       CPU    image\n${rows.join('\n')}`);
} finally {
  await docker('rm', '-f', bare).catch(() => undefined);
  await compose('down', '-v', '--remove-orphans').catch(() => undefined);
}
