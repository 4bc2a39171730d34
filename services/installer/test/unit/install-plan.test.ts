import type { ReleaseImage } from '@aico-update/shared';
import type Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { newContainerSpec } from '../../src/domain/container-spec.ts';
import {
  type InstallStep,
  PlanError,
  planInstall,
  planRollback,
  type RunningService,
} from '../../src/domain/install-plan.ts';

const image = (service: string, id: string): ReleaseImage => ({
  service,
  image_id: `sha256:${id.repeat(64)}`,
  repo_tags: [],
  config: { digest: `sha256:${id.repeat(64)}`, length: 1, target: 't' },
  layers: [],
});

const running = (service: string, id: string, fixedHostPort = false): RunningService => ({
  service,
  container: `aico-${service}`,
  imageId: `sha256:${id.repeat(64)}`,
  fixedHostPort,
});
const kinds = (plan: InstallStep[]) => plan.map((s) => `${s.kind}:${s.service}`);

describe('planInstall', () => {
  it('checks disk and health and loads every image before any container is stopped, and commits only at the end', () => {
    const plan = planInstall(
      [image('api', 'a'), image('worker', 'b')],
      [running('api', '0'), running('worker', '1')],
      {
        backupServices: ['api'],
      },
    );
    expect(kinds(plan)).toEqual([
      'check-disk:*',
      'check-healthy:api',
      'check-healthy:worker',
      'load-image:api',
      'load-image:worker',
      'prepare:*',
      'backup:*',
      'swap:api',
      'health-gate:api',
      'swap:worker',
      'health-gate:worker',
      'commit:api',
      'commit:worker',
    ]);
    expect(plan[0]).toMatchObject({ kind: 'check-disk', bytes: 2 });
    expect(plan.find((s) => s.kind === 'backup')).toMatchObject({ services: ['api'] });
    expect(plan.find((s) => s.kind === 'swap')).toMatchObject({
      fromImageId: `sha256:${'0'.repeat(64)}`,
      imageId: `sha256:${'a'.repeat(64)}`,
      strategy: 'stop-first',
    });
  });

  it('plans no backup step when no data is declared, and only the staging steps when asked to stage', () => {
    const images = [image('api', 'a')];
    expect(kinds(planInstall(images, [running('api', '0')]))).not.toContain('backup:*');
    expect(kinds(planInstall(images, [running('api', '0')], { backupHooks: true }))).toContain('backup:*');
    expect(kinds(planInstall(images, [running('api', '0')], { stageOnly: true }))).toEqual([
      'check-disk:*',
      'check-healthy:api',
      'load-image:api',
    ]);
  });

  it('swaps start-first only where asked and no fixed host port is published, and says why not', () => {
    const plan = planInstall(
      [image('api', 'a'), image('web', 'b')],
      [running('api', '0'), running('web', '1', true)],
      {
        strategy: { api: 'start-first', web: 'start-first' },
      },
    );
    const swaps = plan.filter((s) => s.kind === 'swap');
    expect(swaps[0]).toMatchObject({ service: 'api', strategy: 'start-first' });
    expect(swaps[1]).toMatchObject({ service: 'web', strategy: 'stop-first' });
    expect(swaps[1]?.note).toMatch(/fixed host port/);
  });

  it('leaves alone a service already on the target image', () => {
    expect(planInstall([image('api', 'a')], [running('api', 'a')])).toEqual([]);
  });

  it('refuses a release with a service no container is declared for', () => {
    expect(() => planInstall([image('api', 'a')], [])).toThrow(PlanError);
  });
});

describe('planRollback', () => {
  const previous = [{ service: 'api', container: 'aico-api', imageId: `sha256:${'0'.repeat(64)}` }];

  it('swaps each service back to the image it ran before, gated, then commits', () => {
    const plan = planRollback(previous, [running('api', 'a')]);
    expect(kinds(plan)).toEqual(['swap:api', 'health-gate:api', 'commit:api']);
    expect(plan[0]).toMatchObject({
      imageId: `sha256:${'0'.repeat(64)}`,
      fromImageId: `sha256:${'a'.repeat(64)}`,
    });
  });

  it('with a backup: restores the data while the service is stopped (stop-first), then the hooks', () => {
    const plan = planRollback(previous, [running('api', 'a')], {
      strategy: { api: 'start-first' },
      backupId: 'b1',
    });
    expect(kinds(plan)).toEqual([
      'restore-data:api',
      'swap:api',
      'health-gate:api',
      'restore-hooks:*',
      'commit:api',
    ]);
    expect(plan[1]).toMatchObject({ strategy: 'stop-first' });
  });

  it('has nothing to do when the services already run the previous images', () => {
    expect(planRollback(previous, [running('api', '0')])).toEqual([]);
  });
});

describe('newContainerSpec', () => {
  const oldImage = {
    Config: {
      Cmd: ['httpd'],
      Env: ['PATH=/bin', 'IMAGE_DEFAULT=1'],
      Labels: { 'org.opencontainers.image.version': '1.0.0' },
      Healthcheck: { Test: ['CMD', 'true'] },
    },
  } as unknown as Docker.ImageInspectInfo;
  const old = {
    Id: 'abcdef0123456789',
    Name: '/aico-backend',
    Config: {
      Hostname: 'abcdef012345',
      Cmd: ['httpd'],
      Env: ['PATH=/bin', 'IMAGE_DEFAULT=1', 'AICO_TENANT=home'],
      Labels: { 'org.opencontainers.image.version': '1.0.0', 'com.docker.compose.service': 'backend' },
      Healthcheck: { Test: ['CMD', 'true'] },
      User: 'aico',
    },
    HostConfig: { RestartPolicy: { Name: 'unless-stopped' }, NetworkMode: 'aico_default' },
    NetworkSettings: {
      Networks: {
        aico_default: { Aliases: ['backend', 'abcdef012345'] },
        aico_bus: { Aliases: ['backend-bus'] },
      },
    },
  } as unknown as Docker.ContainerInspectInfo;

  it('keeps what the deployment set and drops what the old image contributed', () => {
    const { create, extraNetworks } = newContainerSpec(old, oldImage, 'sha256:new');
    expect(create).toMatchObject({
      name: 'aico-backend',
      Image: 'sha256:new',
      Env: ['AICO_TENANT=home'],
      Labels: { 'com.docker.compose.service': 'backend' },
      User: 'aico',
      HostConfig: { RestartPolicy: { Name: 'unless-stopped' }, NetworkMode: 'aico_default' },
      NetworkingConfig: { EndpointsConfig: { aico_default: { Aliases: ['backend'] } } },
    });
    expect(create).not.toHaveProperty('Cmd');
    expect(create).not.toHaveProperty('Healthcheck');
    expect(create).not.toHaveProperty('Hostname');
    expect(extraNetworks).toEqual([{ name: 'aico_bus', endpoint: { Aliases: ['backend-bus'] } }]);
  });

  it('records the new image where compose v2 looks, so `docker compose up -d` does not recreate the container', () => {
    const composed = {
      ...old,
      Config: {
        ...old.Config,
        Labels: { ...old.Config.Labels, 'com.docker.compose.image': 'sha256:old' },
      },
    } as Docker.ContainerInspectInfo;
    const { create } = newContainerSpec(composed, oldImage, 'sha256:new');
    expect(create.Labels).toEqual({
      'com.docker.compose.service': 'backend',
      'com.docker.compose.image': 'sha256:new',
    });
  });
});
