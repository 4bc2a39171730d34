export { DockerRuntime } from './adapters/docker-runtime.ts';
export { JournalStore } from './adapters/journal.ts';
export { type InstallerConfig, installerConfigSchema } from './config.ts';
export type { ContainerRuntime, HealthVerdict } from './domain/ports.ts';
export {
  type InstallDeps,
  InstallFailed,
  installRelease,
  recoverInterrupted,
} from './handlers/install-release.ts';
export { type RunningInstaller, startInstaller } from './main.ts';
export { createInstallerMetrics } from './metrics.ts';
