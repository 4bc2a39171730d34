export { classifyTufError, TufError } from './classify.ts';
export {
  type DownloadTargetOptions,
  type RefreshOutcome,
  ROOT_HISTORY,
  TufClient,
  type TufClientOptions,
  type TufSession,
} from './client.ts';
export { FetchError } from './fetch-errors.ts';
export { type FetcherOptions, type FetcherStats, type ResumableOutcome, TufFetcher } from './fetcher.ts';
export { createTufClient } from './from-config.ts';
export { DirectoryFetcher, exportMirror, mirrorUrl } from './mirror.ts';
export { RateLimiter } from './rate-limiter.ts';
export { releaseOfTarget, signedRelease } from './releases.ts';
