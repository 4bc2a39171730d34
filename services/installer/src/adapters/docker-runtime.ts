import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { basename, dirname } from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError, fsyncFile } from '@aico-update/shared';
import Docker from 'dockerode';
import { newContainerSpec } from '../domain/container-spec.ts';
import { previousName } from '../domain/install-plan.ts';
import type {
  ContainerRuntime,
  ContainerState,
  ExecResult,
  HealthState,
  HealthVerdict,
  ReplaceOptions,
} from '../domain/ports.ts';

/** Suffix of the previous container while a swap is in progress or soaking (see previousName). */
export const PREVIOUS_SUFFIX = previousName('');

function isNotFound(error: unknown): boolean {
  return (error as { statusCode?: number }).statusCode === 404;
}

export class DockerRuntime implements ContainerRuntime {
  readonly docker: Docker;

  constructor(socketPath = '/var/run/docker.sock') {
    this.docker = new Docker({ socketPath });
  }

  async ping(): Promise<void> {
    await this.docker.ping();
  }

  async container(name: string): Promise<ContainerState | undefined> {
    try {
      const info = await this.docker.getContainer(name).inspect();
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ''),
        imageId: info.Image,
        running: info.State.Running && !info.State.Restarting,
        restarting: info.State.Restarting,
        health: (info.State.Health?.Status as HealthState | undefined) ?? 'none',
        restartCount: info.RestartCount,
        // Host networking binds the host's ports directly: two containers cannot run side by side.
        fixedHostPort:
          info.HostConfig.NetworkMode === 'host' ||
          Object.values(info.HostConfig.PortBindings ?? {}).some((bindings) =>
            (bindings as { HostPort?: string }[] | null)?.some((b) => b.HostPort && b.HostPort !== '0'),
          ),
      };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async loadImage(archive: NodeJS.ReadableStream): Promise<void> {
    const stream = await this.docker.loadImage(archive);
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(stream, (error: Error | null, events: { error?: string }[]) => {
        const failed = events?.find((e) => e.error);
        if (error || failed) reject(error ?? new Error(failed?.error));
        else resolve();
      });
    });
  }

  async imageExists(imageId: string): Promise<boolean> {
    try {
      await this.docker.getImage(imageId).inspect();
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async tag(imageId: string, ref: string): Promise<void> {
    const colon = ref.lastIndexOf(':');
    const [repo, tag] =
      colon > ref.lastIndexOf('/') ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
    await this.docker.getImage(imageId).tag({ repo, tag });
  }

  async imageRef(name: string): Promise<string | undefined> {
    const info = await this.docker.getContainer(name).inspect();
    return info.Config.Image.startsWith('sha256:') ? undefined : info.Config.Image;
  }

  async replace(
    name: string,
    imageId: string,
    options: ReplaceOptions,
  ): Promise<{ previous: string; stoppedAt: number }> {
    const info = await this.docker.getContainer(name).inspect();
    // By id from here on: after the rename, the name belongs to the new container.
    const old = this.docker.getContainer(info.Id);
    const oldImage = await this.docker.getImage(info.Image).inspect();
    const spec = newContainerSpec(info, oldImage, imageId);
    // The new container keeps the tag reference the deployment uses, so compose sees its own image name.
    if (!info.Config.Image.startsWith('sha256:')) spec.create.Image = info.Config.Image;
    const previous = previousName(name);
    let stoppedAt = 0;
    await this.removeIfExists(previous);
    await old.rename({ name: previous });
    const startFirst = options.strategy === 'start-first';
    const networks = [...Object.entries(spec.create.NetworkingConfig?.EndpointsConfig ?? {})].map(
      ([networkName, endpoint]) => ({ name: networkName, endpoint: { ...endpoint } }),
    );
    if (startFirst && spec.create.NetworkingConfig?.EndpointsConfig) {
      // Start-first: the service's aliases reach the new container only once it is ready (below).
      for (const endpoint of Object.values(spec.create.NetworkingConfig.EndpointsConfig)) {
        delete endpoint.Aliases;
      }
    }
    try {
      const created = await this.docker.createContainer(spec.create);
      if (!startFirst) {
        for (const network of spec.extraNetworks) {
          await this.docker
            .getNetwork(network.name)
            .connect({ Container: created.id, EndpointConfig: network.endpoint });
        }
      }
      if (startFirst) {
        // Both run side by side until the new one is ready; then the old one stops (no downtime).
        await created.start();
        const ready = await this.waitHealthy(name, {
          timeoutMs: options.readyTimeoutMs,
          soakMs: 0,
          probeUrl: options.probeUrl,
          fresh: true,
        });
        if (!ready.healthy) throw new AppError('HEALTH_GATE_FAILED', ready.reason);
        // Ready: now it joins the service's aliases (the first network again, with them; then the rest).
        for (const network of networks) {
          await this.docker.getNetwork(network.name).disconnect({ Container: created.id });
        }
        for (const network of [...networks, ...spec.extraNetworks]) {
          await this.docker
            .getNetwork(network.name)
            .connect({ Container: created.id, EndpointConfig: network.endpoint });
        }
        // Drain: out of the networks first (its name and aliases now resolve to the new one only),
        // requests in flight finish, then it stops. restore() connects it again from the new one's networks.
        for (const network of Object.keys(info.NetworkSettings.Networks ?? {})) {
          await this.docker.getNetwork(network).disconnect({ Container: info.Id });
        }
        await sleep(options.drainMs);
        await stopContainer(old);
        stoppedAt = Date.now();
      } else {
        // Stop-first: the old container releases its ports before the new one starts.
        await stopContainer(old);
        stoppedAt = Date.now();
        await created.start();
      }
    } catch (error) {
      await this.restore(name, previous).catch(() => undefined);
      if (error instanceof AppError) throw error;
      throw new AppError(
        'SWAP_FAILED',
        `could not start the new ${name} container: ${(error as Error).message}; the old one was restored`,
        {
          cause: error,
        },
      );
    }
    return { previous, stoppedAt };
  }

  async waitHealthy(
    name: string,
    options: { timeoutMs: number; soakMs: number; probeUrl?: string | undefined; fresh?: boolean },
  ): Promise<HealthVerdict> {
    const deadline = Date.now() + options.timeoutMs;
    let healthySince: number | undefined;
    let baseline: number | undefined;
    for (;;) {
      const state = await this.container(name);
      if (!state) return { healthy: false, reason: `container ${name} disappeared` };
      if (!state.running) return { healthy: false, reason: `container ${name} exited` };
      // Any restart during the gate is a crash loop; a container created for this update starts from 0.
      baseline ??= options.fresh ? 0 : state.restartCount;
      if (state.restarting || state.restartCount > baseline) {
        return {
          healthy: false,
          reason: `container ${name} restarted (crash loop, ${state.restartCount} restart(s))`,
        };
      }
      if (state.health === 'unhealthy')
        return { healthy: false, reason: `container ${name} reported unhealthy by its HEALTHCHECK` };
      const probeOk = options.probeUrl ? await probe(options.probeUrl) : true;
      const ready = (state.health === 'healthy' || state.health === 'none') && probeOk;
      if (ready) {
        healthySince ??= Date.now();
        if (Date.now() - healthySince >= options.soakMs)
          return { healthy: true, reason: 'healthy through the soak window', healthyAt: healthySince };
      } else {
        healthySince = undefined;
      }
      if (Date.now() > deadline) {
        return {
          healthy: false,
          reason: `container ${name} not healthy within ${Math.round(options.timeoutMs / 1000)} s (health: ${state.health}${options.probeUrl ? `, probe ${probeOk ? 'ok' : 'failing'}` : ''})`,
        };
      }
      await sleep(250);
    }
  }

  async restore(name: string, previousName: string, beforeStart?: () => Promise<void>): Promise<void> {
    const replacement = await this.docker
      .getContainer(name)
      .inspect()
      .catch((error: unknown) => {
        if (isNotFound(error)) return undefined;
        throw error;
      });
    await this.removeIfExists(name);
    const old = await this.docker.getContainer(previousName).inspect();
    const previous = this.docker.getContainer(old.Id);
    await previous.rename({ name });
    // A start-first swap took the old container out of its networks to drain it: the replacement
    // was created with the same networks and aliases, so they are put back from it.
    for (const [network, endpoint] of Object.entries(replacement?.NetworkSettings.Networks ?? {})) {
      if (old.NetworkSettings.Networks?.[network] || network === 'host' || network === 'none') continue;
      const aliases = (endpoint.Aliases ?? []).filter((alias: string) => !replacement?.Id.startsWith(alias));
      await this.docker.getNetwork(network).connect({
        Container: old.Id,
        EndpointConfig: network === 'bridge' ? {} : { Aliases: aliases },
      });
    }
    if (beforeStart) {
      await stopContainer(previous);
      await beforeStart();
    }
    await previous.start().catch((error: { statusCode?: number }) => {
      if (error.statusCode !== 304) throw error;
    });
  }

  async stop(name: string): Promise<void> {
    await stopContainer(this.docker.getContainer(name));
  }

  async mounts(container: string): Promise<string[]> {
    const info = await this.docker.getContainer(container).inspect();
    return (info.Mounts ?? []).map((m) => m.Destination);
  }

  async putFile(container: string, path: string, file: string): Promise<void> {
    await this.docker.getContainer(container).putArchive(file, { path: dirname(path) });
  }

  async archive(container: string, path: string, file: string): Promise<void> {
    const stream = (await this.docker.getContainer(container).getArchive({ path })) as NodeJS.ReadableStream;
    await pipeline(stream, createWriteStream(file));
    await fsyncFile(file); // on disk before the backup is declared whole
  }

  /**
   * Restores archived paths into a (stopped) container without ever leaving them half-restored: each
   * archive is extracted into a staging folder inside its path, and only when every one is complete are
   * the live contents moved aside and the staged ones moved in (renames on the same volume), then the old
   * removed. A failing extraction removes the staging folders: the live data stays as it was.
   */
  async unarchive(container: string, entries: { path: string; file: string }[]): Promise<void> {
    const info = await this.docker.getContainer(container).inspect();
    const stamp = randomBytes(4).toString('hex');
    const staging = (path: string) => `${path.replace(/\/+$/, '')}/.aico-restore-${stamp}`;
    const paths = entries.map((e) => e.path);
    await this.#helper(
      info,
      'mkdir',
      `for p do mkdir -p -- "$p/.aico-restore-${stamp}" || exit 1; done`,
      paths,
    );
    try {
      for (const entry of entries) {
        await this.docker
          .getContainer(info.Id)
          .putArchive(entry.file, { path: staging(entry.path), noOverwriteDirNonDir: 'false' });
      }
    } catch (error) {
      await this.#helper(info, 'clean', `for p do rm -rf -- "$p/.aico-restore-${stamp}"; done`, paths).catch(
        () => undefined,
      );
      throw new AppError(
        'RESTORE_FAILED',
        `extracting the backup into ${container} failed (${(error as Error).message}); its data was not touched`,
        { cause: error },
      );
    }
    // The archive of /var/lib/aico holds `aico/…`: its top folder's contents are what goes back.
    const swapIn = [
      'set -e',
      'while [ $# -gt 0 ]; do',
      `  p=$1; b=$2; shift 2; s="$p/.aico-restore-${stamp}"; o="$p/.aico-old-${stamp}"`,
      '  mkdir -p -- "$o"',
      `  find "$p" -mindepth 1 -maxdepth 1 ! -name ".aico-restore-${stamp}" ! -name ".aico-old-${stamp}" -exec mv -- {} "$o"/ \\;`,
      '  find "$s/$b" -mindepth 1 -maxdepth 1 -exec mv -- {} "$p"/ \\;',
      '  rm -rf -- "$o" "$s"',
      'done',
    ].join('\n');
    await this.#helper(
      info,
      'swap-in',
      swapIn,
      entries.flatMap((e) => [e.path, basename(e.path.replace(/\/+$/, ''))]),
    );
  }

  /** Runs a shell script in a throwaway container of the container's own image, with its volumes. */
  async #helper(
    info: Docker.ContainerInspectInfo,
    what: string,
    script: string,
    args: string[],
  ): Promise<void> {
    const helper = await this.docker.createContainer({
      Image: info.Image,
      Entrypoint: ['/bin/sh', '-c', script, what],
      Cmd: args,
      User: '0:0',
      NetworkDisabled: true,
      Tty: true,
      Labels: { 'org.aico-update.helper': 'restore' },
      HostConfig: { VolumesFrom: [info.Id], AutoRemove: false },
    });
    try {
      await helper.start();
      const { StatusCode } = (await helper.wait()) as { StatusCode: number };
      if (StatusCode !== 0) {
        const logs = (await helper.logs({ stdout: true, stderr: true })).toString().trim();
        throw new AppError(
          'RESTORE_FAILED',
          `the restore helper (${what}) in ${info.Name.replace(/^\//, '')} exited with ${StatusCode}: ${logs.slice(-300)} (its image needs /bin/sh, find, mv and rm)`,
        );
      }
    } finally {
      await helper.remove({ force: true }).catch(() => undefined);
    }
  }

  async exec(container: string, command: readonly string[]): Promise<ExecResult> {
    const exec = await this.docker.getContainer(container).exec({
      Cmd: [...command],
      AttachStdout: true,
      AttachStderr: true,
    });
    const stream = await exec.start({ hijack: true, stdin: false });
    const output: Buffer[] = [];
    const sink = new PassThrough();
    sink.on('data', (chunk: Buffer) => output.push(chunk));
    this.docker.modem.demuxStream(stream, sink, sink);
    await new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', reject);
    });
    const { ExitCode } = await exec.inspect();
    return { exitCode: ExitCode ?? -1, output: Buffer.concat(output).toString('utf8') };
  }

  async ensureRunning(name: string): Promise<void> {
    await this.docker
      .getContainer(name)
      .start()
      .catch((error: { statusCode?: number }) => {
        if (error.statusCode !== 304) throw error;
      });
  }

  async remove(name: string): Promise<void> {
    await this.removeIfExists(name);
  }

  async removeIfExists(name: string): Promise<void> {
    try {
      await this.docker.getContainer(name).remove({ force: true });
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }
}

async function stopContainer(container: Docker.Container): Promise<void> {
  await container.stop({ t: 10 }).catch((error: { statusCode?: number }) => {
    if (error.statusCode !== 304) throw error;
  });
}

async function probe(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}
