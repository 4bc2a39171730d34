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

type InstallerSettings = NonNullable<z.input<typeof installerConfigSchema>['installer']>;

/** Install deps exactly as the service builds them, from `installer.*` settings as a config file gives them. */
export function testInstallDeps(
  io: { runtime: ContainerRuntime; redis: Redis; nc: NatsConnection; logger?: Logger },
  installer: InstallerSettings,
): InstallDeps & { registry: Registry } {
  const config = installerConfigSchema.parse({ installer });
  const registry = createMetricsRegistry('installer-test');
  const deps = createInstallDeps(config, {
    ...io,
    registry,
    logger: io.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
  });
  return { ...deps, registry };
}
