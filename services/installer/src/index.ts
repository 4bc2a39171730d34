export { type InstallerConfig, installerConfigSchema } from './config.ts';
export { type RunningInstaller, startInstaller } from './main.ts';
