import { collectDefaultMetrics, Registry } from 'prom-client';

/** Every metric name starts with this; units end the name (`_seconds`, `_bytes`, `_total`). */
export const METRIC_PREFIX = 'aico_update_';

/**
 * One registry per service (never prom-client's global one, so tests can run several services in one
 * process). Process metrics are prefixed too, and every series carries the service label.
 */
export function createMetricsRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX });
  return registry;
}
