import { type CheckResponse, createMetricsRegistry, Topics, updatePolicySchema } from '@aico-update/shared';
import { TufError } from '@aico-update/tuf-client';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { type CheckDeps, runCheck } from '../../src/handlers/run-check.ts';
import { createCheckerMetrics } from '../../src/metrics.ts';
import {
  FakeDownloads,
  FakeEvents,
  FakeState,
  fakeInstalled,
  fakeSource,
  release,
} from '../support/fakes.ts';

function deps(overrides: Partial<CheckDeps> & Pick<CheckDeps, 'source'>) {
  const events = new FakeEvents();
  const downloads = new FakeDownloads();
  const state = new FakeState();
  const registry = createMetricsRegistry('checker-test');
  const all: CheckDeps = {
    policy: updatePolicySchema.parse({}),
    devices: async () => [],
    catalog: {},
    installed: fakeInstalled({ backend: '1.0.0' }),
    state,
    events,
    downloads,
    clock: { now: () => new Date('2026-11-27T03:00:00Z') },
    metrics: createCheckerMetrics(registry),
    logger: pino({ level: 'silent' }),
    ...overrides,
  };
  return { all, events, downloads, state, registry };
}

const job = { v: 1, reason: 'schedule', forced: false } as const;

describe('runCheck', () => {
  it('verifies the chosen manifest, announces the release once and queues its download', async () => {
    const { source, verified } = fakeSource([release({ version: '1.0.0' }), release({ version: '1.1.0' })]);
    const { all, events, downloads } = deps({ source });

    const first = await runCheck(all, job);
    const second = await runCheck(all, job);

    expect(first.outcome).toBe('update_available');
    expect(first.components[0]?.update?.version).toBe('1.1.0');
    expect(verified).toEqual(['backend@1.1.0', 'backend@1.1.0']);
    expect(events.of(Topics.checkResponse)).toEqual([first, second]);
    expect(events.of(Topics.available)).toEqual([
      {
        v: 1,
        release: first.components[0]?.update,
        installed: '1.0.0',
        detected_at: '2026-11-27T03:00:00.000Z',
      },
    ]);
    expect(downloads.jobs).toEqual([{ v: 1, release: first.components[0]?.update, reason: 'auto_download' }]);
  });

  it('follows the policy: no notification when notify_available is off, no download unless allowed', async () => {
    const { source } = fakeSource([release({ version: '1.1.0' })]);
    const policy = updatePolicySchema.parse({ notify_available: false, auto_download: false });
    const { all, events, downloads } = deps({ source, policy });
    const response = await runCheck(all, job);
    expect(response.outcome).toBe('update_available');
    expect(events.of(Topics.available)).toEqual([]);
    expect(downloads.jobs).toEqual([]);
  });

  it('queues a critical release under critical_install even when auto_download is off', async () => {
    const { source } = fakeSource([release({ version: '1.0.1', critical: true })]);
    const policy = updatePolicySchema.parse({ auto_download: false });
    const { all, downloads } = deps({ source, policy });
    await runCheck(all, job);
    expect(downloads.jobs.map((j) => [j.release.version, j.reason])).toEqual([['1.0.1', 'critical']]);
  });

  it('reports a classified failure in the response, the event and the metrics, and does not throw', async () => {
    const failure = new TufError('attack', 'TUF_ROLLBACK', 'update rejected: rollback');
    const { source } = fakeSource([], { fail: failure });
    const { all, events, downloads, registry } = deps({ source });
    const response = await runCheck(all, job);
    expect(response).toMatchObject({
      outcome: 'failed',
      error: { kind: 'attack', code: 'TUF_ROLLBACK', message: 'update rejected: rollback' },
      components: [],
    });
    expect(events.of(Topics.checkResponse)).toEqual([response]);
    expect(downloads.jobs).toEqual([]);
    expect(await registry.getSingleMetricAsString('aico_update_check_failures_total')).toContain(
      'aico_update_check_failures_total{kind="attack",code="TUF_ROLLBACK",service="checker-test"} 1',
    );
  });

  it('refuses a release whose signed manifest describes another version', async () => {
    const { source } = fakeSource([release({ version: '1.1.0' })], {
      manifest: (r) => ({ ...r, version: '6.6.6', schema: 1, artifacts: [], images: [] }),
    });
    const { all, events, downloads } = deps({ source });
    const response: CheckResponse = await runCheck(all, job);
    expect(response.error?.code).toBe('TUF_MANIFEST_MISMATCH');
    expect(events.of(Topics.available)).toEqual([]);
    expect(downloads.jobs).toEqual([]);
  });

  it('leaves out a release the installer quarantined (no offer, no download) and writes the check into the history', async () => {
    const { source } = fakeSource([release({ version: '1.1.0' })]);
    const { all, downloads, state } = deps({ source });
    const hold = {
      component: 'backend' as const,
      version: '1.1.0',
      kind: 'quarantined' as const,
      reason: 'rolled back: health gate failed',
      at: '2026-11-27T00:00:00.000Z',
    };
    state.heldBack = [hold];
    const response = await runCheck(all, job);
    expect(response.outcome).toBe('up_to_date');
    expect(response.components).toEqual([{ component: 'backend', installed: '1.0.0', held: [hold] }]);
    expect(downloads.jobs).toEqual([]);
    expect(state.decisions).toEqual([
      {
        kind: 'checked',
        check_id: response.check_id,
        trigger: 'schedule',
        reason: 'backend 1.0.0 up to date; 1.1.0 quarantined (rolled back: health gate failed)',
      },
    ]);
  });
});
