import { ExtraTopics, type Logger } from '@aico-update/shared';
import type { InstallDeps } from './install-release.ts';

/*
 * Integrity after installation (the seed: "verified before and after installation"): every managed
 * container must run the image of its installed, signed release. A container someone re-created from
 * another image is drift: reported (metric, event, log, status) and left alone; the installer does not
 * fight the operator, it tells them.
 */

export interface Drift {
  component: string;
  version: string;
  service: string;
  container: string;
  expected: string;
  /** The image the container runs, or undefined when it is gone. */
  actual: string | undefined;
}

export class IntegrityWatch {
  readonly #deps: InstallDeps;
  readonly #log: Logger;
  #reported = new Set<string>();
  last: { checked_at: string; drift: Drift[] } | undefined;

  constructor(deps: InstallDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ integrity: true });
  }

  /** Compares every managed container with its installed release; skipped while an install runs. */
  async check(): Promise<Drift[] | undefined> {
    const deps = this.#deps;
    if (await deps.journal.read()) return undefined;
    const drift: Drift[] = [];
    for (const [component, installed] of Object.entries(await deps.state.allInstalled())) {
      for (const [service, expected] of Object.entries(installed?.images ?? {})) {
        const container = deps.services[service];
        if (!container || !installed) continue;
        const actual = (await deps.runtime.container(container))?.imageId;
        deps.metrics.drift.set({ target_service: service }, actual === expected ? 0 : 1);
        if (actual !== expected) {
          drift.push({ component, version: installed.version, service, container, expected, actual });
        }
      }
    }
    const now = new Set(drift.map((d) => `${d.container}:${d.actual ?? 'gone'}`));
    for (const d of drift) {
      const key = `${d.container}:${d.actual ?? 'gone'}`;
      if (this.#reported.has(key)) continue;
      this.#log.error(
        { ...d },
        `${d.container} runs ${d.actual ?? 'no container'}, not the image of the installed ${d.component} ${d.version} (${d.expected}): it was changed outside the update system; left as it is`,
      );
      await deps.events.publish(ExtraTopics.integrityDrift, { v: 1, ...d }, `drift-${key}`);
    }
    this.#reported = now;
    this.last = { checked_at: new Date().toISOString(), drift };
    return drift;
  }
}
