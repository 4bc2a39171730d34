export { type CheckerConfig, checkerConfigSchema } from './config.ts';
export { type RunningChecker, type StartOptions, startChecker } from './main.ts';
