import { METRIC_PREFIX } from '@aico-update/shared';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type DownloaderMetrics = ReturnType<typeof createDownloaderMetrics>;

export function createDownloaderMetrics(registry: Registry) {
  const registers = [registry];
  return {
    bytesFetched: new Counter({
      name: `${METRIC_PREFIX}download_fetched_bytes_total`,
      help: 'Bytes received from the update server for releases.',
      registers,
    }),
    bytesSaved: new Counter({
      name: `${METRIC_PREFIX}download_delta_saved_bytes_total`,
      help: 'Bytes releases needed that were already in the cache, as whole files or as chunks of cached layers (saved by delta updates).',
      registers,
    }),
    bytesResumed: new Counter({
      name: `${METRIC_PREFIX}download_resumed_bytes_total`,
      help: 'Bytes of interrupted downloads that were kept and not fetched again.',
      registers,
    }),
    resumes: new Counter({
      name: `${METRIC_PREFIX}download_resumes_total`,
      help: 'Downloads of a file continued from a partial file.',
      registers,
    }),
    verificationFailures: new Counter({
      name: `${METRIC_PREFIX}download_verification_failures_total`,
      help: 'Files that did not match their signed length or sha256 (and were discarded).',
      registers,
    }),
    downloads: new Counter({
      name: `${METRIC_PREFIX}downloads_total`,
      help: 'Release downloads by outcome (completed, already_present, failed).',
      labelNames: ['outcome'] as const,
      registers,
    }),
    duration: new Histogram({
      name: `${METRIC_PREFIX}download_duration_seconds`,
      help: 'Duration of release downloads that completed.',
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
      registers,
    }),
    inProgress: new Gauge({
      name: `${METRIC_PREFIX}downloads_in_progress`,
      help: 'Release downloads running now (with download_fetched_bytes_total: a download that is stuck).',
      registers,
    }),
    progress: new Gauge({
      name: `${METRIC_PREFIX}download_progress_ratio`,
      help: 'Progress of the latest download of each component, 0 to 1 (bytes done of the signed total).',
      labelNames: ['component'] as const,
      registers,
    }),
    cacheSize: new Gauge({
      name: `${METRIC_PREFIX}cache_size_bytes`,
      help: 'Bytes in the verified blob cache.',
      registers,
    }),
    cacheFree: new Gauge({
      name: `${METRIC_PREFIX}cache_free_bytes`,
      help: 'Free bytes on the cache volume.',
      registers,
    }),
  };
}
