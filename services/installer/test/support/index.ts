export { SampleDeployment } from './deployment.ts';
export { testInstallDeps } from './deps.ts';
export { markDownloaded, stageRelease } from './stage.ts';
