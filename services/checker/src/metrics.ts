import { METRIC_PREFIX } from '@aico-update/shared';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type CheckerMetrics = ReturnType<typeof createCheckerMetrics>;

export function createCheckerMetrics(registry: Registry) {
  const registers = [registry];
  return {
    checks: new Counter({
      name: `${METRIC_PREFIX}checks_total`,
      help: 'Update checks run, by reason and outcome (update_available, up_to_date, failed).',
      labelNames: ['reason', 'outcome'] as const,
      registers,
    }),
    checkFailures: new Counter({
      name: `${METRIC_PREFIX}check_failures_total`,
      help: 'Failed update checks by failure kind (unreachable, expired, attack, local, config, internal) and code.',
      labelNames: ['kind', 'code'] as const,
      registers,
    }),
    checkDuration: new Histogram({
      name: `${METRIC_PREFIX}check_duration_seconds`,
      help: 'Duration of update checks, including metadata refresh and manifest verification.',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    }),
    lastSuccess: new Gauge({
      name: `${METRIC_PREFIX}last_successful_check_timestamp_seconds`,
      help: 'Unix time of the last check that completed without error.',
      registers,
    }),
    updateAvailable: new Gauge({
      name: `${METRIC_PREFIX}update_available`,
      help: '1 when the last successful check found an update for the component, else 0.',
      labelNames: ['component'] as const,
      registers,
    }),
    metadataExpiry: new Gauge({
      name: `${METRIC_PREFIX}tuf_metadata_expiry_timestamp_seconds`,
      help: 'Unix time at which each trusted top-level TUF role (root, timestamp, snapshot, targets) expires.',
      labelNames: ['role'] as const,
      registers,
    }),
    badRequests: new Counter({
      name: `${METRIC_PREFIX}check_requests_rejected_total`,
      help: 'Check requests that could not be parsed, by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
  };
}
