import { hostname } from 'node:os';
import { AppError, UPDATER_SERVICES, type UpdaterService } from '@aico-update/shared';
import type Docker from 'dockerode';
import { PREVIOUS_SUFFIX } from '../adapters/docker-runtime.ts';
import type { SelfUpdateIntent } from './intent.ts';

/*
 * The update system's own deployment as the installer finds it through the Docker Engine: its own
 * container (the hostname Docker gives it), the containers of the other services (compose's labels:
 * the same project, one container per service, or installer.updater_containers where there is no
 * compose), and the helper container it starts for a self-update.
 */

export type HelperState = 'running' | 'restarting' | 'exited' | 'missing';

/** What a helper container is recognised by (and all it is allowed to be). */
export const HELPER_LABEL = 'org.aico-update.helper';

/** The compiled helper inside the installer image (WORKDIR /app). */
const HELPER_MAIN = 'services/installer/src/self-update/helper.js';

export interface OwnDeployment {
  /** Service → container, the installer's own included; throws when the installer is not in a container. */
  containers(): Promise<Partial<Record<UpdaterService, string>>>;
  /** The image the running installer was created from. */
  ownImageId(): Promise<string>;
  /** Starts the helper for the intent, from `imageId`, with the socket and the state volume only. */
  startHelper(intent: SelfUpdateIntent, imageId: string): Promise<void>;
  helperState(name: string): Promise<HelperState>;
  /** The helper's last log lines (said when it failed). */
  helperLog(name: string): Promise<string>;
  removeHelper(name: string): Promise<void>;
}

export class DockerDeployment implements OwnDeployment {
  readonly #docker: Docker;
  readonly #configured: Readonly<Record<string, string>>;
  readonly #paths: { stateDir: string; intentFile: string; dockerSocket: string };

  constructor(
    docker: Docker,
    options: {
      configured: Readonly<Record<string, string>>;
      stateDir: string;
      intentFile: string;
      dockerSocket: string;
    },
  ) {
    this.#docker = docker;
    this.#configured = options.configured;
    this.#paths = options;
  }

  async #self(): Promise<Docker.ContainerInspectInfo> {
    try {
      return await this.#docker.getContainer(hostname()).inspect();
    } catch (error) {
      throw new AppError(
        'SELF_UPDATE_UNSUPPORTED',
        `the installer does not run in a container of this Docker Engine (no container ${hostname()}: ${(error as Error).message}); the update system updates itself only as deployed (docker-compose.yml). Nothing was changed`,
        { cause: error },
      );
    }
  }

  async containers(): Promise<Partial<Record<UpdaterService, string>>> {
    const self = await this.#self();
    const found: Partial<Record<UpdaterService, string>> = {};
    const project = self.Config.Labels?.['com.docker.compose.project'];
    if (project) {
      const listed = await this.#docker.listContainers({
        all: true,
        filters: { label: [`com.docker.compose.project=${project}`] },
      });
      for (const container of listed) {
        // A helper is never one of the services, whatever labels its image brought along.
        if (container.Labels[HELPER_LABEL] !== undefined) continue;
        const service = container.Labels['com.docker.compose.service'] as UpdaterService;
        const name = container.Names[0]?.replace(/^\//, '') ?? '';
        if (!UPDATER_SERVICES.includes(service) || name.endsWith(PREVIOUS_SUFFIX)) continue;
        if (found[service] && found[service] !== name) {
          throw new AppError(
            'SELF_UPDATE_AMBIGUOUS',
            `compose project ${project} has two containers for ${service} (${found[service]}, ${name}); remove the stray one (docker compose up -d --remove-orphans). Nothing was changed`,
          );
        }
        found[service] = name;
      }
    }
    for (const [service, name] of Object.entries(this.#configured)) found[service as UpdaterService] = name;
    found.installer = self.Name.replace(/^\//, '');
    return found;
  }

  async ownImageId(): Promise<string> {
    return (await this.#self()).Image;
  }

  async startHelper(intent: SelfUpdateIntent, imageId: string): Promise<void> {
    const self = await this.#self();
    const source = (destination: string) => {
      const mount = self.Mounts.find((m) => m.Destination === destination);
      if (!mount) {
        throw new AppError(
          'SELF_UPDATE_UNSUPPORTED',
          `the installer has no mount at ${destination}: the helper needs the installer's state volume and the Docker socket`,
        );
      }
      return mount.Type === 'volume' ? (mount.Name as string) : mount.Source;
    };
    const binds = [
      `${source(this.#paths.stateDir)}:${this.#paths.stateDir}`,
      `${source(this.#paths.dockerSocket)}:${this.#paths.dockerSocket}`,
    ];
    await this.removeHelper(intent.helper);
    const helper = await this.#docker.createContainer({
      name: intent.helper,
      Image: imageId,
      Cmd: ['node', HELPER_MAIN, this.#paths.intentFile, this.#paths.dockerSocket],
      User: '0:0',
      Env: [`AICO_LOG_LEVEL=${process.env.AICO_LOG_LEVEL || 'info'}`],
      Labels: {
        [HELPER_LABEL]: 'self-update',
        'org.aico-update.release': intent.id,
        // An image committed from a compose container carries compose's labels; the helper is not part
        // of the project (`up -d --remove-orphans` must not take it for a stray service mid-swap).
        'com.docker.compose.project': '',
        'com.docker.compose.service': '',
      },
      Healthcheck: { Test: ['NONE'] },
      HostConfig: {
        Binds: binds,
        NetworkMode: 'none',
        CapDrop: ['ALL'],
        // Root on a volume owned by the image's user, like the installer; nothing else.
        CapAdd: ['DAC_OVERRIDE'],
        SecurityOpt: ['no-new-privileges:true'],
        ReadonlyRootfs: true,
        Init: true,
        // A crashed helper is started again by the engine, even while no installer runs (mid-swap).
        RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 5 },
      },
    });
    await helper.start();
  }

  async helperState(name: string): Promise<HelperState> {
    try {
      const info = await this.#docker.getContainer(name).inspect();
      if (info.Config.Labels?.[HELPER_LABEL] !== 'self-update') return 'missing';
      if (info.State.Restarting) return 'restarting';
      return info.State.Running ? 'running' : 'exited';
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return 'missing';
      throw error;
    }
  }

  async helperLog(name: string): Promise<string> {
    const logs = await this.#docker
      .getContainer(name)
      .logs({ stdout: true, stderr: true, tail: 20 })
      .catch(() => Buffer.from(''));
    return logs
      .toString('utf8')
      .replace(/[^\x20-\x7e\n]/g, '')
      .trim();
  }

  async removeHelper(name: string): Promise<void> {
    // Only a helper: a name that happens to be someone else's container is never removed.
    if ((await this.helperState(name)) === 'missing') return;
    await this.#docker.getContainer(name).remove({ force: true });
  }
}
