import { setTimeout as sleep } from 'node:timers/promises';
import { InstallFailed } from '../domain/install-failed.ts';
import type { ContainerRuntime, ContainerState } from '../domain/ports.ts';

/** The longest an update waits for a service that is still starting, or briefly failing its checks. */
export const PREFLIGHT_WAIT_MAX_MS = 60_000;
const POLL_MS = 1_000;

/**
 * An update starts only from a healthy state. A service failing its health check may be busy for a
 * moment (three checks timing out on a loaded two-core machine turn a healthy service "unhealthy" for a
 * few seconds), so it is given up to `waitMs` (at most PREFLIGHT_WAIT_MAX_MS) to pass again; a
 * container that is not running is refused at once, one still in its start period is accepted as before.
 * Refusing changes nothing.
 */
export async function requireHealthy(
  runtime: ContainerRuntime,
  container: string,
  waitMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + Math.min(waitMs, PREFLIGHT_WAIT_MAX_MS);
  let state: ContainerState | undefined = await runtime.container(container);
  while (state?.running && state.health === 'unhealthy' && Date.now() < deadline) {
    await sleep(POLL_MS);
    state = await runtime.container(container);
  }
  if (!state?.running) {
    throw new InstallFailed(
      'PREFLIGHT_UNHEALTHY',
      `${container} is not running; ${what}. Nothing was changed`,
      false,
    );
  }
  if (state.health === 'unhealthy') {
    const waited = Math.round(Math.min(waitMs, PREFLIGHT_WAIT_MAX_MS) / 1000);
    throw new InstallFailed(
      'PREFLIGHT_UNHEALTHY',
      `${container} is unhealthy (waited ${waited} s for it to pass its health check); ${what}. Nothing was changed`,
      false,
    );
  }
}
