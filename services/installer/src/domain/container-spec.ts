import type Docker from 'dockerode';

/*
 * The new container gets the old one's full configuration except the image: networks with aliases,
 * mounts, environment, labels (compose's included), ports, restart policy, health check, user, command.
 * What the old *image* contributed to the old container (its labels, env, cmd, health check, …) is not
 * copied: the new image's own values apply, as `docker compose up` would give them.
 */

type ContainerConfig = Docker.ContainerInspectInfo['Config'];
type ImageConfig = Docker.ImageInspectInfo['Config'];

export interface NewContainerSpec {
  create: Docker.ContainerCreateOptions;
  /** Networks beyond the first: API 1.41 takes one network at create; the rest are connected before start. */
  extraNetworks: { name: string; endpoint: Docker.EndpointSettings }[];
}

/** Where compose v2 records the image id a container was created from. */
export const COMPOSE_IMAGE_LABEL = 'com.docker.compose.image';

const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

/** Entries of `mine` the image did not set (or set differently): what the deployment itself decided. */
function ownLabels(mine: Record<string, string> | undefined, fromImage: Record<string, string> | undefined) {
  return Object.fromEntries(Object.entries(mine ?? {}).filter(([key, value]) => fromImage?.[key] !== value));
}

function ownEnv(mine: string[] | undefined, fromImage: string[] | undefined): string[] {
  const image = new Set(fromImage ?? []);
  return (mine ?? []).filter((entry) => !image.has(entry));
}

export function newContainerSpec(
  old: Docker.ContainerInspectInfo,
  oldImage: Pick<Docker.ImageInspectInfo, 'Config'>,
  newImageRef: string,
): NewContainerSpec {
  const config: ContainerConfig = old.Config;
  const image: ImageConfig = oldImage.Config;
  const name = old.Name.replace(/^\//, '');
  const keepIfOwn = <K extends keyof ContainerConfig & keyof ImageConfig>(key: K) =>
    same(config[key], image[key]) ? undefined : config[key];

  const labels = ownLabels(config.Labels, image.Labels);
  // Compose v2 recreates a container whose recorded image is not the one its tag names now: record the new one.
  if (labels[COMPOSE_IMAGE_LABEL] && newImageRef.startsWith('sha256:'))
    labels[COMPOSE_IMAGE_LABEL] = newImageRef;
  const create: Docker.ContainerCreateOptions = {
    name,
    Image: newImageRef,
    Labels: labels,
    Env: ownEnv(config.Env, image.Env),
    HostConfig: old.HostConfig as Docker.HostConfig,
    Tty: config.Tty,
    OpenStdin: config.OpenStdin,
    StdinOnce: config.StdinOnce,
    AttachStdin: config.AttachStdin,
    AttachStdout: config.AttachStdout,
    AttachStderr: config.AttachStderr,
  };
  // Docker sets the hostname to the short container id unless the deployment chose one.
  if (config.Hostname && !old.Id.startsWith(config.Hostname)) create.Hostname = config.Hostname;
  if (config.Domainname) create.Domainname = config.Domainname;
  const own = {
    Cmd: keepIfOwn('Cmd'),
    Entrypoint: keepIfOwn('Entrypoint'),
    User: keepIfOwn('User'),
    WorkingDir: keepIfOwn('WorkingDir'),
    Healthcheck: keepIfOwn('Healthcheck'),
    ExposedPorts: keepIfOwn('ExposedPorts'),
    Volumes: keepIfOwn('Volumes'),
    StopSignal: (config as { StopSignal?: string }).StopSignal,
  };
  for (const [key, value] of Object.entries(own)) {
    if (value !== undefined && value !== '' && !(Array.isArray(value) && value.length === 0)) {
      (create as Record<string, unknown>)[key] = value;
    }
  }

  // Networks with their aliases, minus the alias Docker derives from the old container's id.
  const shortId = old.Id.slice(0, 12);
  const networks = Object.entries(old.NetworkSettings.Networks ?? {}).map(([networkName, settings]) => ({
    name: networkName,
    endpoint: {
      ...(settings.IPAMConfig ? { IPAMConfig: settings.IPAMConfig } : {}),
      ...(settings.Links ? { Links: settings.Links } : {}),
      Aliases: (settings.Aliases ?? []).filter((alias: string) => alias !== shortId && alias !== old.Id),
    } as Docker.EndpointSettings,
  }));
  const mode = old.HostConfig.NetworkMode ?? '';
  const attachable = networks.filter(() => !/^(host|none|container:)/.test(mode));
  const [first, ...rest] = attachable;
  if (first) create.NetworkingConfig = { EndpointsConfig: { [first.name]: first.endpoint } };
  return { create, extraNetworks: rest };
}
