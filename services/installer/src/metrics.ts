import { METRIC_PREFIX } from '@aico-update/shared';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type InstallerMetrics = ReturnType<typeof createInstallerMetrics>;

export function createInstallerMetrics(registry: Registry) {
  const registers = [registry];
  return {
    /** What installed_version_info shows: component → version. */
    installedVersions: new Map<string, string>(),
    installs: new Counter({
      name: `${METRIC_PREFIX}installs_total`,
      help: 'Installs by component and outcome (installed, already_installed, rolled_back, failed, refused; held: not installed by itself because quarantined, skipped or paused).',
      labelNames: ['component', 'outcome'] as const,
      registers,
    }),
    rollbacks: new Counter({
      name: `${METRIC_PREFIX}rollbacks_total`,
      help: 'Rollbacks by reason code (HEALTH_GATE_FAILED, SWAP_FAILED, INTERRUPTED, …).',
      labelNames: ['component', 'reason'] as const,
      registers,
    }),
    phaseDuration: new Histogram({
      name: `${METRIC_PREFIX}install_phase_duration_seconds`,
      help: 'Duration of each install step kind (load-image, check-healthy, swap, health-gate, commit).',
      labelNames: ['phase'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    }),
    downtime: new Histogram({
      name: `${METRIC_PREFIX}install_downtime_seconds`,
      help: 'Per service: from stopping the old container to the new one passing its health checks (before the soak).',
      // Not `service`: every series already carries service="installer" (the microservice).
      labelNames: ['target_service'] as const,
      buckets: [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
      registers,
    }),
    installed: new Gauge({
      name: `${METRIC_PREFIX}installed_version_info`,
      help: 'The installed version of each component, as a label (value 1).',
      labelNames: ['component', 'version'] as const,
      registers,
    }),
    drift: new Gauge({
      name: `${METRIC_PREFIX}image_drift`,
      help: '1 when a managed container runs another image than its installed, signed release names (changed outside the update system), else 0.',
      labelNames: ['target_service'] as const,
      registers,
    }),
    paused: new Gauge({
      name: `${METRIC_PREFIX}auto_install_paused`,
      help: '1 while the circuit breaker pauses automatic installs of a component (after repeated failures; an operator resumes them).',
      labelNames: ['component'] as const,
      registers,
    }),
    held: new Gauge({
      name: `${METRIC_PREFIX}releases_held`,
      help: 'Releases not installed automatically: quarantined after a rollback, or skipped by the user.',
      labelNames: ['kind'] as const,
      registers,
    }),
    lastSuccess: new Gauge({
      name: `${METRIC_PREFIX}last_successful_install_timestamp_seconds`,
      help: 'Unix time of the last install that completed.',
      labelNames: ['component'] as const,
      registers,
    }),
  };
}

/** Sets the installed version of a component, dropping the series of the version it had before. */
export function showInstalledVersion(metrics: InstallerMetrics, component: string, version: string): void {
  metrics.installed.reset();
  metrics.installedVersions.set(component, version);
  for (const [c, v] of metrics.installedVersions) metrics.installed.set({ component: c, version: v }, 1);
}
