import { join } from 'node:path';
import { EventPublisher, type Logger, Queues, updateSystemVersion } from '@aico-update/shared';
import type { NatsConnection } from '@nats-io/nats-core';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { BackupStore } from './adapters/backup-store.ts';
import { DockerRuntime } from './adapters/docker-runtime.ts';
import { InstallerState } from './adapters/installer-state.ts';
import { JobSeal } from './adapters/job-seal.ts';
import { JournalStore } from './adapters/journal.ts';
import { natsPrepareSignal } from './adapters/prepare-signal.ts';
import { ReleaseHolds } from './adapters/release-holds.ts';
import { ReleaseTrust } from './adapters/release-trust.ts';
import { SettingsStore } from './adapters/settings-store.ts';
import type { InstallerConfig } from './config.ts';
import type { ContainerRuntime } from './domain/ports.ts';
import type { InstallDeps } from './handlers/install-release.ts';
import { createInstallerMetrics } from './metrics.ts';
import { DockerDeployment, type OwnDeployment } from './self-update/deployment.ts';
import { INTENT_FILE, IntentStore } from './self-update/intent.ts';

/** What an install needs, from the installer's configuration and its connections. */
export async function createInstallDeps(
  config: InstallerConfig,
  io: {
    runtime: ContainerRuntime;
    /** Default: the deployment the Docker runtime's engine shows. */
    deployment?: OwnDeployment;
    redis: Redis;
    nc: NatsConnection;
    registry: Registry;
    logger: Logger;
  },
): Promise<InstallDeps> {
  const settings = config.installer;
  const userSettings = await SettingsStore.open(settings.state_dir, config.update, io.logger);
  return {
    trust: new ReleaseTrust({
      cacheDir: settings.cache_dir,
      stateDir: config.tuf.state_dir,
      trustedRoot: config.tuf.trusted_root,
      logger: io.logger,
    }),
    seal: await JobSeal.open(settings.state_dir),
    state: new InstallerState(settings.state_dir, io.logger),
    settings: userSettings,
    // The object every decision reads: the configuration overlaid by the user's settings, kept current.
    policy: userSettings.live.policy,
    holds: new ReleaseHolds(
      settings.state_dir,
      {
        failures: settings.circuit_breaker_failures,
        periodMs: settings.circuit_breaker_hours * 3_600_000,
      },
      io.logger,
    ),
    queue: new Queue(Queues.install, { connection: io.redis }),
    window: { timezone: settings.timezone, minutes: settings.window_minutes },
    // The update system's own version is what its image says, unless the configuration says otherwise.
    installedSeed: { updater: updateSystemVersion(), ...config.installed },
    runtime: io.runtime,
    deployment: io.deployment ?? ownDeployment(io.runtime, config),
    intents: new IntentStore(settings.state_dir, io.logger),
    metrics: createInstallerMetrics(io.registry),
    redis: io.redis,
    events: new EventPublisher(io.nc),
    logger: io.logger,
    journal: new JournalStore(settings.state_dir),
    cacheDir: settings.cache_dir,
    services: settings.services,
    probes: settings.probes,
    strategy: settings.strategy,
    healthTimeoutMs: settings.health_timeout_seconds * 1000,
    soakMs: settings.soak_seconds * 1000,
    drainMs: settings.drain_seconds * 1000,
    backups: new BackupStore(settings.backup.dir),
    backupKeep: settings.backup.keep,
    data: { paths: settings.backup.paths, hooks: settings.backup.hooks },
    prepareTimeoutMs: settings.prepare_timeout_seconds * 1000,
    prepareMaxDelayMs: settings.prepare_max_delay_seconds * 1000,
    prepare: natsPrepareSignal(io.nc, {
      timeoutMs: settings.prepare_timeout_seconds * 1000,
      maxDelayMs: settings.prepare_max_delay_seconds * 1000,
      logger: io.logger,
    }),
  };
}

/** The update system's own containers, found through the engine the installer drives. */
function ownDeployment(runtime: ContainerRuntime, config: InstallerConfig): OwnDeployment {
  if (!(runtime instanceof DockerRuntime)) {
    throw new Error('the installer finds its own deployment through the Docker runtime; pass io.deployment');
  }
  const settings = config.installer;
  return new DockerDeployment(runtime.docker, {
    configured: settings.updater_containers,
    stateDir: settings.state_dir,
    intentFile: join(settings.state_dir, INTENT_FILE),
    dockerSocket: settings.docker_socket,
  });
}
