import type { ReleaseImage } from '@aico-update/shared';
import type Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { newContainerSpec } from '../../src/domain/container-spec.ts';
import { PlanError, planInstall } from '../../src/domain/install-plan.ts';

const image = (service: string, id: string): ReleaseImage => ({
  service,
  image_id: `sha256:${id.repeat(64)}`,
  repo_tags: [],
  config: { digest: `sha256:${id.repeat(64)}`, length: 1, target: 't' },
  layers: [],
});

describe('planInstall', () => {
  it('loads and verifies every image before any container is stopped, and commits only at the end', () => {
    const plan = planInstall(
      [image('api', 'a'), image('worker', 'b')],
      [
        { service: 'api', container: 'aico-api', imageId: `sha256:${'0'.repeat(64)}` },
        { service: 'worker', container: 'aico-worker', imageId: `sha256:${'1'.repeat(64)}` },
      ],
    );
    expect(plan.map((s) => `${s.kind}:${s.service}`)).toEqual([
      'load-image:api',
      'load-image:worker',
      'check-healthy:api',
      'check-healthy:worker',
      'swap:api',
      'health-gate:api',
      'swap:worker',
      'health-gate:worker',
      'commit:api',
      'commit:worker',
    ]);
  });

  it('leaves alone a service already on the target image', () => {
    const plan = planInstall(
      [image('api', 'a')],
      [{ service: 'api', container: 'aico-api', imageId: `sha256:${'a'.repeat(64)}` }],
    );
    expect(plan).toEqual([]);
  });

  it('refuses a release with a service no container is declared for', () => {
    expect(() => planInstall([image('api', 'a')], [])).toThrow(PlanError);
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
});
