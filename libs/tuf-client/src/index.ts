export { classifyTufError, TufError } from './classify.ts';
export { type RefreshOutcome, TufClient, type TufClientOptions, type TufSession } from './client.ts';
export { FetchError, type FetcherOptions, type FetcherStats, TufFetcher } from './fetcher.ts';
