export type HealthState = 'healthy' | 'unhealthy' | 'starting' | 'none';

export interface ContainerState {
  id: string;
  name: string;
  imageId: string;
  running: boolean;
  /** Docker is between restarts of a crashing container. */
  restarting: boolean;
  health: HealthState;
  restartCount: number;
  /** Publishes a fixed host port: two containers cannot run side by side (start-first impossible). */
  fixedHostPort: boolean;
}

export type SwapStrategy = 'stop-first' | 'start-first';

export interface ReplaceOptions {
  strategy: SwapStrategy;
  /** start-first: how long the new container may take to become ready before the old one is stopped. */
  readyTimeoutMs: number;
  /** start-first: how long the old container, out of its networks, may finish requests before it stops. */
  drainMs: number;
  probeUrl?: string | undefined;
}

export interface ExecResult {
  exitCode: number;
  output: string;
}

export interface HealthVerdict {
  healthy: boolean;
  reason: string;
  /** When the container first passed its checks in the streak that ended the wait (epoch ms). */
  healthyAt?: number;
}

/** The Docker Engine as the installer needs it. Only the installer holds the socket. */
export interface ContainerRuntime {
  container(name: string): Promise<ContainerState | undefined>;
  /** Loads an image archive streamed to the engine; returns nothing, the caller checks the id it expects. */
  loadImage(archive: NodeJS.ReadableStream): Promise<void>;
  imageExists(imageId: string): Promise<boolean>;
  /** Points `ref` (repo:tag) at the image, so `docker compose up` keeps what was installed. */
  tag(imageId: string, ref: string): Promise<void>;
  /**
   * Renames the old container aside, creates the new one with the old one's configuration and the new
   * image, stops the old one and starts the new one. Returns the old container's new name.
   */
  replace(
    name: string,
    imageId: string,
    options: ReplaceOptions,
  ): Promise<{ previous: string; stoppedAt: number }>;
  /** Healthy by HEALTHCHECK (when the image has one), optional HTTP probe, and no restart or exit during the soak. */
  waitHealthy(
    name: string,
    options: {
      timeoutMs: number;
      soakMs: number;
      probeUrl?: string | undefined;
      /** Created for this update: any restart at all is a crash loop. */
      fresh?: boolean;
    },
  ): Promise<HealthVerdict>;
  /**
   * Puts the old container back under its name and starts it; removes the new one. `beforeStart` runs
   * while both are stopped (the data restore of a rollback).
   */
  restore(name: string, previousName: string, beforeStart?: () => Promise<void>): Promise<void>;
  stop(name: string): Promise<void>;
  /** Writes a tar of `path` inside the container (volume, bind mount or layer; running or stopped) to `file`. */
  archive(container: string, path: string, file: string): Promise<void>;
  /** Mount destinations (volumes and bind mounts) inside the container. */
  mounts(container: string): Promise<string[]>;
  /** Extracts a tar made by archive of `path` back in place, over what is there. */
  putFile(container: string, path: string, file: string): Promise<void>;
  /** Empties `paths` in the container's mounts, then extracts each tar `file` (made by archive) back in place. */
  unarchive(container: string, entries: { path: string; file: string }[]): Promise<void>;
  /** Runs a command inside a running container. */
  exec(container: string, command: readonly string[]): Promise<ExecResult>;
  remove(name: string): Promise<void>;
  /** Starts the container if it is not running. */
  ensureRunning(name: string): Promise<void>;
  /** The image reference (repo:tag) the container was created from, when it was a tag. */
  imageRef(name: string): Promise<string | undefined>;
}
