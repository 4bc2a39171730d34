/*
 * The deployed stack on this machine, for the demo (scripts/demo) and the end-to-end test
 * (test/deploy): docker-compose.yml with the development update server (profile dev), the gateway as
 * AICO's broker (infra/compose/broker.yml) and the example AICO stack (a sample backend at 1.0.0),
 * built offline from this machine's binaries (infra/base-images.sh).
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { initRepository, openRepository, type Repository } from '@aico-update/release';
import { UPDATER_SERVICES } from '@aico-update/shared';
import { buildSampleBackend, docker, makeTempDir, waitUntil } from '@aico-update/shared/testing';

const run = promisify(execFile);

/** Compose v1 (`docker-compose`, Debian 12's) or v2 (`docker compose`, the CLI plugin setup installs). */
export type ComposeVersion = 'v1' | 'v2';
const COMPOSE: Record<ComposeVersion, [string, ...string[]]> = {
  v1: ['docker-compose'],
  v2: ['docker', 'compose'],
};
export const ROOT = resolve(import.meta.dirname, '..');
/** Where the gateway keeps the control API's token it made on first start (docker-compose.yml). */
export const CONTROL_TOKEN_FILE = '/var/lib/aico-update/gateway/control-token';
/** Where the gateway, as AICO's broker, keeps the public key of the key pair it made. */
export const BROKER_PUBLIC_KEY_FILE = '/var/lib/aico-update/gateway/broker-public-key';
const FILES = [
  ...['-f', 'docker-compose.yml', '-f', 'infra/compose/broker.yml'],
  ...['-f', 'examples/aico-stack/docker-compose.yml', '--profile', 'dev'],
];
/** Prometheus alone of the monitoring profile: Grafana has no image made offline (infra/base-images.sh). */
const MONITORING = ['--profile', 'monitoring'];
const SERVICES = [
  ...['redis', 'nats', 'update-server', 'checker', 'downloader', 'installer', 'bus-gateway'],
  'prometheus',
];

/** Runs compose (the given version) on the stack's files; the error ends with compose's own output. */
async function runCompose(
  version: ComposeVersion,
  env: NodeJS.ProcessEnv,
  args: string[],
  root = ROOT,
  extraFiles: readonly string[] = [],
): Promise<string> {
  const [command, ...composeArgs] = COMPOSE[version];
  const files = [...FILES, ...extraFiles.flatMap((file) => ['-f', file])];
  try {
    const { stdout } = await run(command, [...composeArgs, ...files, ...args], {
      cwd: root,
      env,
      maxBuffer: 32 * 1024 * 1024,
    });
    return stdout.trim();
  } catch (error) {
    const e = error as { stderr?: string };
    throw new Error(
      `${COMPOSE[version].join(' ')} ${args.join(' ')} failed: ${e.stderr?.trim().slice(-2000)}`,
    );
  }
}

export interface StackOptions {
  project: string;
  compose: ComposeVersion;
  /** Where the TUF repository lives (kept when the stack stays up). */
  repoDir: string;
  ports: { control: number; busPub: number; busSub: number; backend: number; prometheus: number };
  /** The deployed backend's container and image names. */
  backend: { container: string; image: string };
  /** The CURVE public key of the frontend (the demo, the test) the broker is to admit. */
  frontendPublicKey: string;
  /** The source tree whose compose files and Dockerfile make the stack (another version's, to upgrade from). */
  root?: string;
  /** The tag of the images built from it (AICO_UPDATE_IMAGE_TAG; `local` by default). */
  imageTag?: string;
  /** More compose files over the stack's (absolute, or relative to the source tree). */
  extraFiles?: string[];
  /** The installer's health timeout (20 s by default: a failing gate is seen soon). */
  healthTimeoutSeconds?: number;
}

export class Stack {
  readonly options: StackOptions;
  readonly repo: Repository;
  readonly env: NodeJS.ProcessEnv;
  /** Image tags this stack built, for cleanup. */
  readonly images: string[];

  private constructor(options: StackOptions, repo: Repository) {
    this.options = options;
    this.repo = repo;
    this.images = [options.backend.image];
    this.env = {
      ...process.env,
      COMPOSE_PROJECT_NAME: options.project,
      AICO_DEV_REPO: repo.dir,
      AICO_UPDATE_SERVER_METADATA_URL: 'http://update-server:8443/metadata',
      AICO_UPDATE_SERVER_ALLOW_INSECURE_HTTP: 'true',
      AICO_TRUSTED_ROOT_FILE: repo.trustedRootPath,
      AICO_INSTALLED: 'backend=1.0.0',
      AICO_INSTALLER_SERVICES: `backend=${options.backend.container}`,
      AICO_INSTALLER_SOAK_SECONDS: '2',
      AICO_INSTALLER_HEALTH_TIMEOUT_SECONDS: String(options.healthTimeoutSeconds ?? 20),
      AICO_BACKEND_IMAGE: options.backend.image,
      AICO_BACKEND_CONTAINER: options.backend.container,
      AICO_BACKEND_PORT: String(options.ports.backend),
      AICO_BUS_PUB_PORT: String(options.ports.busPub),
      AICO_BUS_SUB_PORT: String(options.ports.busSub),
      AICO_CONTROL_PORT: String(options.ports.control),
      AICO_BUS_ZEROMQ_CLIENT_KEYS: options.frontendPublicKey,
      AICO_UPDATE_IMAGE_TAG: options.imageTag ?? 'local',
      AICO_PROMETHEUS_PORT: String(options.ports.prometheus),
    };
  }

  /** Makes the base images, builds the service images, and brings everything up (not yet healthy). */
  static async up(options: StackOptions, log: (line: string) => void = () => undefined): Promise<Stack> {
    await mkdir(options.repoDir, { recursive: true });
    const repo = await openRepository(options.repoDir).catch(() => initRepository(options.repoDir));
    // The update server reads repo.json and public/ as user node; keys/ stays the publisher's alone.
    await chmod(options.repoDir, 0o755);
    const stack = new Stack(options, repo);
    log('making the base images from this machine’s binaries (infra/base-images.sh)');
    await run('bash', [join(ROOT, 'infra/base-images.sh')], { cwd: ROOT });
    // Built through Compose v2 whichever Compose runs the stack: the same Dockerfile and engine, and
    // v2's images are in the engine's build cache already (v1's own builder shares none of it, and
    // building everything twice cost CI minutes). Compose v1 then runs the images it finds.
    log('building the service images from the Dockerfile');
    await runCompose('v2', stack.env, ['build', '-q'], options.root, options.extraFiles);
    log(`building the sample AICO backend 1.0.0 (${options.backend.image})`);
    await buildSampleBackend(options.backend.image, '1.0.0');
    log(`compose ${options.compose}: up -d, and Prometheus (profile monitoring)`);
    await stack.compose('up', '-d');
    await stack.compose(...MONITORING, 'up', '-d', 'prometheus');
    return stack;
  }

  /** Removes a stack an earlier run left up (containers, networks, volumes), if any. */
  static async remove(project: string, compose: ComposeVersion): Promise<void> {
    const env = {
      ...process.env,
      COMPOSE_PROJECT_NAME: project,
      AICO_UPDATE_SERVER_METADATA_URL: 'unused',
      AICO_TRUSTED_ROOT_FILE: '/dev/null',
    };
    await runCompose(compose, env, [...MONITORING, 'down', '-v', '--remove-orphans']).catch(() => undefined);
  }

  compose(...args: string[]): Promise<string> {
    return runCompose(this.options.compose, this.env, args, this.options.root, this.options.extraFiles);
  }

  /** The same deployment (project, volumes, repository) made from another source tree: an upgrade. */
  from(root: string, imageTag: string): Stack {
    return new Stack({ ...this.options, root, imageTag }, this.repo);
  }

  /** A service's container name: v1 joins with `_`, v2 with `-`. */
  container(service: string): string {
    const separator = this.options.compose === 'v1' ? '_' : '-';
    return [this.options.project, service, '1'].join(separator);
  }

  /** The control API's token, as an operator shows it: from the gateway's volume. */
  async controlToken(): Promise<string> {
    return (await docker('exec', this.container('bus-gateway'), 'cat', CONTROL_TOKEN_FILE)).trim();
  }

  /** The broker's CURVE public key, as an operator shows it to configure a frontend. */
  async brokerPublicKey(): Promise<string> {
    return (await docker('exec', this.container('bus-gateway'), 'cat', BROKER_PUBLIC_KEY_FILE)).trim();
  }

  /** Headers for the control API: the token, and JSON for requests that change something. */
  async controlHeaders(): Promise<Record<string, string>> {
    return { authorization: `Bearer ${await this.controlToken()}`, 'content-type': 'application/json' };
  }

  get controlUrl(): string {
    return `http://127.0.0.1:${this.options.ports.control}`;
  }

  get prometheusUrl(): string {
    return `http://127.0.0.1:${this.options.ports.prometheus}`;
  }

  /** Waits until every service reports healthy; the error lists each one's state. */
  async healthy(timeoutMs = 150_000): Promise<void> {
    let states: string[] = [];
    await waitUntil(
      async () => {
        states = await Promise.all(
          SERVICES.map(
            async (s) =>
              `${s}: ${await docker('inspect', '--format', '{{.State.Health.Status}}', this.container(s)).catch(() => 'missing')}`,
          ),
        );
        return states.every((state) => state.endsWith(': healthy'));
      },
      'every service to be healthy',
      timeoutMs,
      1000,
    ).catch((error: Error) => {
      throw new Error(`${error.message} (${states.join(', ')})`);
    });
  }

  /** The version the sample backend answers on its health endpoint, if it answers. */
  async backendVersion(): Promise<string | undefined> {
    const response = await fetch(`http://127.0.0.1:${this.options.ports.backend}/api/v1/health`).catch(
      () => undefined,
    );
    return response?.ok ? ((await response.json()) as { version: string }).version : undefined;
  }

  /** The alerts Prometheus has firing now (its /api/v1/alerts), each with its labels. */
  async firingAlerts(): Promise<{ labels: Record<string, string> }[]> {
    const response = await fetch(`${this.prometheusUrl}/api/v1/alerts`).catch(() => undefined);
    if (!response?.ok) return [];
    const { data } = (await response.json()) as {
      data: { alerts: { state: string; labels: Record<string, string> }[] };
    };
    return data.alerts.filter((alert) => alert.state === 'firing');
  }

  /** The samples of an instant PromQL query, as labels and value. */
  async query(promql: string): Promise<{ metric: Record<string, string>; value: number }[]> {
    const response = await fetch(`${this.prometheusUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
    if (!response.ok) throw new Error(`Prometheus query ${promql}: HTTP ${response.status}`);
    const { data } = (await response.json()) as {
      data: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    return data.result.map(({ metric, value }) => ({ metric, value: Number(value[1]) }));
  }

  /** Publishes a sample backend `version` as a signed release, its image as content-addressed blobs. */
  async publish(
    version: string,
    behaviour: 'healthy' | 'unhealthy' = 'healthy',
    compatibility: { needsUpdater?: string } = {},
  ): Promise<void> {
    const tag = `${this.options.backend.image.replace(/:.*$/, '')}:${version}-${this.options.project}`;
    await buildSampleBackend(tag, version, behaviour);
    const archive = join(await makeTempDir('stack-image'), 'backend.tar');
    await docker('save', '-o', archive, tag);
    await docker('rmi', '-f', tag); // the installer must load it from the verified blobs
    this.images.push(tag);
    await this.repo.addRelease({
      component: 'backend',
      version,
      channel: 'stable',
      notes: behaviour === 'healthy' ? `Sample backend ${version}` : `A broken sample backend ${version}`,
      artifacts: [],
      images: [{ service: 'backend', archive }],
      ...compatibility,
    });
  }

  /**
   * Publishes the update system itself at `version` (component updater): each service's image is the
   * deployed one with the version stamped in (AICO_UPDATE_VERSION), published as plain layers (they are
   * the deployed images' own, so only the configs are new). `broken` makes that service's new image exit
   * at once. Returns each service's new image id.
   */
  async publishUpdater(
    version: string,
    broken?: (typeof UPDATER_SERVICES)[number],
  ): Promise<Record<string, string>> {
    const dir = await makeTempDir('stack-updater');
    const ids: Record<string, string> = {};
    const images: { service: string; archive: string }[] = [];
    for (const service of UPDATER_SERVICES) {
      const tag = `aico-update/${service}:${version}-${this.options.project}`;
      const lines = [
        `FROM aico-update/${service}:${this.options.imageTag ?? 'local'}`,
        `ENV AICO_UPDATE_VERSION=${version}`,
        ...(service === broken ? ['CMD ["node", "-e", "process.exit(3)"]'] : []),
      ];
      await mkdir(join(dir, service));
      await writeFile(join(dir, service, 'Dockerfile'), `${lines.join('\n')}\n`);
      ids[service] = await docker('build', '-q', '-t', tag, join(dir, service));
      const archive = join(dir, `${service}.tar`);
      await docker('save', '-o', archive, tag);
      await docker('rmi', tag); // the installer must load it from the verified blobs
      images.push({ service, archive });
    }
    await this.repo.addRelease({
      component: 'updater',
      version,
      channel: 'stable',
      notes: broken ? `The update system ${version}, its ${broken} broken` : `The update system ${version}`,
      artifacts: [],
      images,
      layers: 'plain',
    });
    await rm(dir, { recursive: true, force: true });
    return ids;
  }

  /** The image each of the update system's services runs now. */
  async serviceImages(): Promise<Record<string, string>> {
    const ids: Record<string, string> = {};
    for (const service of UPDATER_SERVICES) {
      ids[service] = await docker('inspect', '--format', '{{.Image}}', this.container(service));
    }
    return ids;
  }

  /** SIGKILLs a container's processes from the host (a crash: the engine's restart policy applies). */
  async crash(container: string): Promise<void> {
    const pid = await docker('inspect', '--format', '{{.State.Pid}}', container);
    if (!/^[1-9][0-9]*$/.test(pid)) throw new Error(`${container} is not running (pid ${pid})`);
    process.kill(Number(pid), 'SIGKILL');
  }

  async down(): Promise<void> {
    await this.compose(...MONITORING, 'down', '-v', '--remove-orphans').catch(() => undefined);
    await docker('rmi', '-f', ...this.images).catch(() => undefined);
  }
}
