import { strictFake } from '@aico-update/shared/testing';
import { describe, expect, it } from 'vitest';
import { InstallFailed } from '../../src/domain/install-failed.ts';
import type { ContainerRuntime, ContainerState, HealthState } from '../../src/domain/ports.ts';
import { requireHealthy } from '../../src/handlers/preflight-health.ts';

/** A runtime that answers `container` from a script of states, one per call; anything else throws. */
function scriptedRuntime(states: Array<{ running: boolean; health: HealthState } | undefined>): {
  runtime: ContainerRuntime;
  calls: () => number;
} {
  let calls = 0;
  const container = async (name: string): Promise<ContainerState | undefined> => {
    const state = states[Math.min(calls, states.length - 1)];
    calls += 1;
    return state
      ? {
          id: name,
          name,
          imageId: 'sha256:a',
          restarting: false,
          restartCount: 0,
          fixedHostPort: false,
          ...state,
        }
      : undefined;
  };
  const runtime = strictFake('runtime', { container } as Partial<ContainerRuntime>) as ContainerRuntime;
  return { runtime, calls: () => calls };
}

const healthy = { running: true, health: 'healthy' as const };
const unhealthy = { running: true, health: 'unhealthy' as const };

describe('the health preflight before an update', () => {
  it('waits for a service whose checks fail for a moment, and goes ahead once it passes', async () => {
    const { runtime, calls } = scriptedRuntime([unhealthy, unhealthy, healthy]);
    await requireHealthy(runtime, 'aico-downloader-1', 10_000, 'why');
    expect(calls()).toBe(3);
  });

  it('refuses a service still unhealthy when the wait is over, saying how long it waited', async () => {
    const { runtime } = scriptedRuntime([unhealthy]);
    const started = Date.now();
    const refusal = await requireHealthy(runtime, 'aico-downloader-1', 1_500, 'fix it first').catch((e) => e);
    expect(refusal).toBeInstanceOf(InstallFailed);
    expect(refusal.code).toBe('PREFLIGHT_UNHEALTHY');
    expect(refusal.message).toMatch(
      /aico-downloader-1 is unhealthy \(waited 2 s .*fix it first\. Nothing was changed/,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
  });

  it('refuses a container that is not running at once, and one that does not exist', async () => {
    for (const state of [{ running: false, health: 'none' as const }, undefined]) {
      const { runtime, calls } = scriptedRuntime([state]);
      const started = Date.now();
      const refusal = await requireHealthy(runtime, 'aico-backend', 60_000, 'why').catch((e) => e);
      expect(refusal.message).toMatch(/aico-backend is not running/);
      expect(calls()).toBe(1);
      expect(Date.now() - started).toBeLessThan(500);
    }
  });

  it('accepts a service still in its start period, as before', async () => {
    const { runtime, calls } = scriptedRuntime([{ running: true, health: 'starting' }]);
    await requireHealthy(runtime, 'aico-backend', 60_000, 'why');
    expect(calls()).toBe(1);
  });
});
