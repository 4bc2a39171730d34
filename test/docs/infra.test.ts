import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createMetricsRegistry } from '@aico-update/shared';
import { makeTempDir } from '@aico-update/shared/testing';
import type { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { createGatewayMetrics } from '../../services/bus-gateway/src/metrics.ts';
import { createCheckerMetrics } from '../../services/checker/src/metrics.ts';
import { createDownloaderMetrics } from '../../services/downloader/src/metrics.ts';
import { createInstallerMetrics } from '../../services/installer/src/metrics.ts';

/*
 * The monitoring files under infra/: the scrape config reaches every service, every alert the deployment
 * needs is there, valid (promtool check) and behaves (promtool test rules), and every metric an alert or
 * a dashboard panel queries is one the services really export, with the right type.
 */

const run = promisify(execFile);

const infraDir = resolve(import.meta.dirname, '../../infra');
const infra = (path: string) => readFile(join(infraDir, path), 'utf8');

/** Runs Prometheus's own checker (Debian's `prometheus` package; scripts/setup.sh installs it). */
async function promtool(...args: string[]): Promise<string> {
  const { stdout, stderr } = await run('promtool', args).catch((error) => {
    throw new Error(`promtool ${args.join(' ')} failed:\n${error.stdout}${error.stderr}`);
  });
  return stdout + stderr;
}

const exported = new Map<string, string>();
for (const create of [
  createCheckerMetrics,
  createDownloaderMetrics,
  createInstallerMetrics,
  (r: Registry) => createGatewayMetrics(r, () => true),
]) {
  const registry = createMetricsRegistry('infra-test');
  create(registry);
  for (const metric of registry.getMetricsAsArray()) exported.set(metric.name, String(metric.type));
}

/** Every `aico_update_*` series a PromQL expression names, resolved to its metric (histogram suffixes). */
function unknownMetrics(expr: string): string[] {
  return [...expr.matchAll(/\baico_update_[a-z0-9_]+/g)]
    .map(([name]) => name)
    .filter((name) => {
      if (exported.has(name)) return false;
      const base = name.replace(/_(bucket|sum|count)$/, '');
      return exported.get(base) !== 'histogram';
    });
}

describe('infra/prometheus', () => {
  it('scrapes every service on its port', async () => {
    const config = parse(await infra('prometheus/prometheus.yml'));
    const targets = config.scrape_configs.flatMap((job: { static_configs: { targets: string[] }[] }) =>
      job.static_configs.flatMap((s) => s.targets),
    );
    expect(targets.sort()).toEqual(['bus-gateway:8084', 'checker:8081', 'downloader:8082', 'installer:8083']);
    expect(config.rule_files).toEqual(['alerts.yml']);
  });

  it('has the alerts the deployment needs, each well formed and on real metrics', async () => {
    const rules = parse(await infra('prometheus/alerts.yml')).groups.flatMap(
      (group: { rules: unknown[] }) => group.rules,
    ) as {
      alert: string;
      expr: string;
      for?: string;
      labels: { severity: string };
      annotations: Record<string, string>;
    }[];
    expect(rules.map((r) => r.alert).sort()).toEqual([
      'AicoUpdateAutoInstallPaused',
      'AicoUpdateBusDisconnected',
      'AicoUpdateCacheDiskLow',
      'AicoUpdateCheckOverdue',
      'AicoUpdateDownloadStuck',
      'AicoUpdateImageDrift',
      'AicoUpdateInstallFailed',
      'AicoUpdateInstallRefused',
      'AicoUpdateMetadataExpiring',
      'AicoUpdateRolledBack',
    ]);
    for (const rule of rules) {
      expect(rule.expr, rule.alert).toMatch(/aico_update_/);
      expect(unknownMetrics(rule.expr), rule.alert).toEqual([]);
      expect(['warning', 'critical']).toContain(rule.labels.severity);
      expect(rule.annotations.summary?.length, rule.alert).toBeGreaterThan(10);
      expect(rule.annotations.description?.length, rule.alert).toBeGreaterThan(30);
      if (rule.for) expect(rule.for).toMatch(/^\d+[smh]$/);
    }
  });

  it('is a valid configuration whose rules pass promtool', async () => {
    const checked = await promtool('check', 'config', join(infraDir, 'prometheus/prometheus.yml'));
    expect(checked).toMatch(/SUCCESS: 10 rules found/);
  });

  it('alerts when it should and stays quiet when it should (promtool test rules)', async () => {
    // infra/prometheus/alerts.test.yml: each alert on synthetic series, with its rendered texts, and the
    // cases where it must not fire (a new counter series, a restarted Prometheus, a blip).
    expect(await promtool('test', 'rules', join(infraDir, 'prometheus/alerts.test.yml'))).toMatch(/SUCCESS/);
  });
});

describe('infra/grafana', () => {
  it('has a dashboard whose every panel queries real metrics', async () => {
    const dashboard = JSON.parse(await infra('grafana/dashboards/aico-update.json'));
    expect(dashboard.uid).toBe('aico-update');
    const exprs: { title: string; expr: string }[] = dashboard.panels.flatMap(
      (p: { title: string; targets: { expr: string }[] }) =>
        p.targets.map((t) => ({ title: p.title, expr: t.expr })),
    );
    expect(dashboard.panels.every((p: { targets: unknown[] }) => p.targets.length > 0)).toBe(true);
    for (const { title, expr } of exprs) expect(unknownMetrics(expr), title).toEqual([]);
    // PromQL syntax, by promtool: every panel's query as a recording rule.
    const rules = join(await makeTempDir('dashboard-rules'), 'rules.yml');
    const records = exprs.map(({ expr }, i) => ({ record: `dashboard:panel_${i}`, expr }));
    await writeFile(rules, stringify({ groups: [{ name: 'dashboard', rules: records }] }));
    expect(await promtool('check', 'rules', rules)).toMatch(`SUCCESS: ${exprs.length} rules found`);
    const shown = new Set(exprs.flatMap(({ expr }) => expr.match(/aico_update_[a-z0-9_]+/g) ?? []));
    for (const needed of [
      'aico_update_installed_version_info',
      'aico_update_download_progress_ratio',
      'aico_update_install_phase_duration_seconds_bucket',
      'aico_update_rollbacks_total',
      'aico_update_download_delta_saved_bytes_total',
    ]) {
      expect(shown.has(needed), needed).toBe(true);
    }
  });
});
