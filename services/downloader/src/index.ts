export { type DownloaderConfig, downloaderConfigSchema } from './config.ts';
export { type RunningDownloader, startDownloader } from './main.ts';
