import { randomBytes } from 'node:crypto';
import { buildSampleBackend, docker, testTag } from '@aico-update/shared/testing';
import { DockerRuntime, PREVIOUS_SUFFIX } from '../../src/adapters/docker-runtime.ts';

/**
 * A sample backend deployed as compose would: a tag the deployment names, a network with the alias
 * `backend`, a named volume at /data, an init. `hostPort: 'none'` publishes nothing (start-first capable).
 */
export class SampleDeployment {
  readonly id = randomBytes(4).toString('hex');
  readonly name = `aico-test-backend-${this.id}`;
  readonly network = `aico-test-net-${this.id}`;
  readonly volume = `aico-test-data-${this.id}`;
  readonly tag = testTag('aico-test/sample-backend', `deployed-${this.id}`);
  readonly #tags = [this.tag];
  readonly #containers: string[] = [this.name, `${this.name}${PREVIOUS_SUFFIX}`];

  async start(options: { hostPort: 'ephemeral' | 'none' } = { hostPort: 'ephemeral' }): Promise<this> {
    await buildSampleBackend(this.tag, '1.0.0');
    await docker('network', 'create', this.network);
    await docker(
      'run',
      '-d',
      '--init',
      '--name',
      this.name,
      '--network',
      this.network,
      '--network-alias',
      'backend',
      '--restart',
      'unless-stopped',
      '-v',
      `${this.volume}:/data`,
      ...(options.hostPort === 'ephemeral' ? ['-p', '127.0.0.1::8771'] : []),
      this.tag,
    );
    await new DockerRuntime().waitHealthy(this.name, { timeoutMs: 20_000, soakMs: 0 });
    return this;
  }

  /** An image of `version` to publish (removed at the end). */
  async image(version: string, behaviour: 'healthy' | 'unhealthy' | 'exits' = 'healthy'): Promise<string> {
    const tag = testTag('aico-test/sample-backend', `${version}-${this.id}`);
    this.#tags.push(tag);
    await buildSampleBackend(tag, version, behaviour);
    return tag;
  }

  /** Another container on the deployment's network (e.g. a database for hooks), removed at the end. */
  async sidecar(suffix: string, ...args: string[]): Promise<string> {
    const name = `${this.name}-${suffix}`;
    this.#containers.push(name);
    await docker('run', '-d', '--init', '--name', name, '--network', this.network, ...args);
    return name;
  }

  async exec(container: string, script: string): Promise<string> {
    return docker('exec', container, '/bin/sh', '-c', script);
  }

  async inspect(container = this.name) {
    return JSON.parse(await docker('inspect', container))[0];
  }

  /** The version the backend's health endpoint answers, through its published port. */
  async version(): Promise<string> {
    const port = (await this.inspect()).NetworkSettings.Ports['8771/tcp'][0].HostPort;
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/health`);
    return ((await response.json()) as { version: string }).version;
  }

  async remove(): Promise<void> {
    await docker('rm', '-f', ...this.#containers).catch(() => undefined);
    await docker('network', 'rm', this.network).catch(() => undefined);
    await docker('volume', 'rm', this.volume, `${this.volume}-db`).catch(() => undefined);
    await docker('rmi', '-f', ...this.#tags).catch(() => undefined);
  }
}
