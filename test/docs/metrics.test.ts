import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createMetricsRegistry, METRIC_PREFIX } from '@aico-update/shared';
import type { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createGatewayMetrics } from '../../services/bus-gateway/src/metrics.ts';
import { createCheckerMetrics } from '../../services/checker/src/metrics.ts';
import { createDownloaderMetrics } from '../../services/downloader/src/metrics.ts';
import { createInstallerMetrics } from '../../services/installer/src/metrics.ts';

/*
 * Every metric the services export, checked against Prometheus' naming conventions and the README:
 * our prefix, snake_case, counters ending in _total, a base unit for durations and sizes, help text.
 */

const readme = await readFile(resolve(import.meta.dirname, '../../README.md'), 'utf8');

function registries(): Record<string, Registry> {
  const make = (service: string, create: (r: Registry) => unknown) => {
    const registry = createMetricsRegistry(service);
    create(registry);
    return registry;
  };
  return {
    checker: make('checker', createCheckerMetrics),
    downloader: make('downloader', createDownloaderMetrics),
    installer: make('installer', createInstallerMetrics),
    'bus-gateway': make('bus-gateway', (r) => createGatewayMetrics(r, () => true)),
  };
}

describe('exported metrics', () => {
  const all = Object.entries(registries()).flatMap(([service, registry]) =>
    registry
      .getMetricsAsArray()
      // prom-client's default process metrics carry our prefix but are its own (nodejs_*, process_*).
      .filter((m) => m.name.startsWith(METRIC_PREFIX) && !/^aico_update_(nodejs|process)_/.test(m.name))
      .map((m) => ({ service, name: m.name, type: String(m.type), help: m.help })),
  );

  it('exist for every service', () => {
    expect(new Set(all.map((m) => m.service))).toEqual(
      new Set(['checker', 'downloader', 'installer', 'bus-gateway']),
    );
  });

  it.each(all.map((m) => [m.name, m] as const))('%s follows the naming conventions', (_name, metric) => {
    expect(metric.name).toMatch(/^aico_update_[a-z][a-z0-9_]*[a-z0-9]$/);
    expect(metric.help.length).toBeGreaterThan(15);
    if (metric.type === 'counter') expect(metric.name).toMatch(/_total$/);
    else expect(metric.name).not.toMatch(/_total$/);
    if (metric.type === 'histogram') expect(metric.name).toMatch(/_(seconds|bytes)$/);
    if (/duration|downtime|_time/.test(metric.name)) expect(metric.name).toMatch(/_seconds(_total)?$/);
  });

  it('are all documented in the README', () => {
    const missing = all
      .map((m) => m.name.slice(METRIC_PREFIX.length))
      .filter((name) => !readme.includes(`\`${name}`));
    expect(missing).toEqual([]);
  });
});
