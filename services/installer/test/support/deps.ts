import { join } from 'node:path';
import { createMetricsRegistry, type Logger } from '@aico-update/shared';
import type { NatsConnection } from '@nats-io/nats-core';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import type { Registry } from 'prom-client';
import type { z } from 'zod';
import { installerConfigSchema } from '../../src/config.ts';
import type { ContainerRuntime } from '../../src/domain/ports.ts';
import type { InstallDeps } from '../../src/handlers/install-release.ts';
import { createInstallDeps } from '../../src/install-deps.ts';
import { publisherFor } from './stage.ts';

type InstallerSettings = NonNullable<z.input<typeof installerConfigSchema>['installer']>;

/**
 * Install deps exactly as the service builds them, from `installer.*` settings as a config file gives
 * them; the installer trusts the root of the publisher that stageRelease publishes with.
 */
export async function testInstallDeps(
  io: { runtime: ContainerRuntime; redis: Redis; nc: NatsConnection; logger?: Logger },
  installer: InstallerSettings & { cache_dir: string },
  update: NonNullable<z.input<typeof installerConfigSchema>['update']> = {},
): Promise<InstallDeps & { registry: Registry }> {
  const publisher = await publisherFor(installer.cache_dir);
  const stateDir =
    installer.state_dir ??
    join(installer.cache_dir, '..', `${installer.cache_dir.split('/').at(-1)}-installer`);
  const config = installerConfigSchema.parse({
    installer: { ...installer, state_dir: stateDir },
    update,
    tuf: { state_dir: join(stateDir, 'tuf'), trusted_root: publisher.trustedRootPath },
  });
  const registry = createMetricsRegistry('installer-test');
  const deps = await createInstallDeps(config, {
    ...io,
    registry,
    logger: io.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
  });
  return { ...deps, registry };
}
