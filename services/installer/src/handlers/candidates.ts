import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type Component, StateKeys, semverString } from '@aico-update/shared';
import { gt, rcompare } from 'semver';
import type { InstallDeps } from './install-release.ts';

/*
 * Which release an operator means: the version named, or "the newest": of what the downloader says it
 * has, the newest that is newer than the installed one and neither quarantined nor skipped. A list to
 * try, never a proof: the caller verifies the release against the installer's own metadata.
 */

export type ChosenVersion = { ok: true; version: string } | { ok: false; code: string; message: string };

export async function chooseVersion(
  deps: InstallDeps,
  component: Component,
  installed: string | undefined,
  named: string | undefined,
): Promise<ChosenVersion> {
  if (named !== undefined) {
    return semverString.safeParse(named).success
      ? { ok: true, version: named }
      : {
          ok: false,
          code: 'BAD_REQUEST',
          message: `version "${named.slice(0, 100)}" is not a semver version such as 1.2.0`,
        };
  }
  const candidates = (await downloadedVersions(deps, component)).sort(rcompare);
  const holds = (await deps.holds.holds()).filter((h) => h.component === component);
  const newer = candidates.filter((v) => !installed || gt(v, installed));
  const version = newer.find((v) => !holds.some((h) => h.version === v));
  if (version) return { ok: true, version };
  if (newer.length > 0) {
    const held = holds.filter((h) => newer.includes(h.version));
    return {
      ok: false,
      code: held[0]?.kind === 'skipped' ? 'SKIPPED' : 'QUARANTINED',
      message: `no ${component} release newer than ${installed} may be installed as "the newest": ${held.map((h) => `${h.version} is ${h.kind} (${h.reason})`).join('; ')}. Name the version to install it anyway`,
    };
  }
  if (candidates[0]) return { ok: true, version: candidates[0] };
  return {
    ok: false,
    code: 'NOT_DOWNLOADED',
    message: `no ${component} release is downloaded; check for updates and let the download finish first (or ask for a download)`,
  };
}

/** Versions the downloader recorded or left manifests for. */
async function downloadedVersions(deps: InstallDeps, component: string): Promise<string[]> {
  const recorded = (await deps.redis.hkeys(StateKeys.downloaded))
    .filter((key) => key.startsWith(`${component}@`))
    .map((key) => key.slice(component.length + 1));
  const cached = (await readdir(join(deps.cacheDir, 'manifests')).catch(() => [] as string[]))
    .filter((name) => name.startsWith(`${component}@`) && name.endsWith('.json'))
    .map((name) => name.slice(component.length + 1, -'.json'.length));
  return [...new Set([...recorded, ...cached])].filter((v) => semverString.safeParse(v).success);
}
