import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type CommandReply,
  enqueueInstall,
  type InstallRequest,
  type RollbackRequest,
  StateKeys,
  semverString,
} from '@aico-update/shared';
import type { Queue } from 'bullmq';
import { gt, rcompare } from 'semver';
import { InstallFailed } from '../domain/install-failed.ts';
import { decideInstall } from '../domain/install-policy.ts';
import { type InstallDeps, installedVersion } from './install-release.ts';

/*
 * Operator commands (from the bus gateway, the control API or any NATS client that may send them). An
 * install request is verified at once against the installer's own trusted metadata (the release is
 * signed now, its cached manifest hashes to it, it is newer than the installed one unless a downgrade is
 * asked for), so the requester learns why a release cannot be installed; then a job sealed by the
 * installer is queued. The worker verifies it again before it runs.
 */

export interface CommandDeps {
  queue: Queue;
  install: InstallDeps;
}

export async function requestInstall(deps: CommandDeps, request: InstallRequest): Promise<CommandReply> {
  const ids = request.request_id ? { request_id: request.request_id } : {};
  const refuse = (code: string, message: string): CommandReply => ({
    v: 1,
    ...ids,
    accepted: false,
    code,
    message,
  });
  const { component } = request;
  const installed = await installedVersion(deps.install, component);
  let version = request.version;
  if (version === undefined) {
    // Candidates only: what the downloader says it has. Each is verified below before anything happens.
    const candidates = (await downloadedVersions(deps.install, component)).sort(rcompare);
    version = candidates.find((v) => !installed || gt(v, installed)) ?? candidates[0];
    if (!version) {
      return refuse(
        'NOT_DOWNLOADED',
        `no ${component} release is downloaded; check for updates and let the download finish first`,
      );
    }
  }
  if (!semverString.safeParse(version).success) {
    return refuse('BAD_REQUEST', `version "${version.slice(0, 100)}" is not a semver version such as 1.2.0`);
  }
  let release: Awaited<ReturnType<InstallDeps['trust']['verify']>>['release'];
  try {
    ({ release } = await deps.install.trust.verify({ component, version }));
  } catch (error) {
    if (error instanceof InstallFailed) return refuse(error.code, error.message);
    throw error;
  }
  const decision = decideInstall({
    release,
    installed,
    operator: true,
    allowDowngrade: request.allow_downgrade,
    policy: deps.install.policy,
  });
  if (!decision.allowed) return refuse(decision.code, decision.message);
  const jobId = await enqueueInstall(
    deps.queue,
    deps.install.seal.seal({
      v: 1,
      release: { component, version },
      reason: 'request',
      ...(request.auto_restart === false ? { auto_restart: false } : {}),
      ...(request.allow_downgrade ? { allow_downgrade: true } : {}),
    }),
    { retry: true },
  );
  return {
    v: 1,
    ...ids,
    accepted: true,
    job_id: jobId,
    message: `install of ${component} ${version} queued${installed ? ` (installed: ${installed})` : ''}`,
  };
}

/** Versions the downloader recorded or left manifests for: a list to try, never a proof. */
async function downloadedVersions(deps: InstallDeps, component: string): Promise<string[]> {
  const recorded = (await deps.redis.hkeys(StateKeys.downloaded))
    .filter((key) => key.startsWith(`${component}@`))
    .map((key) => key.slice(component.length + 1));
  const cached = (await readdir(join(deps.cacheDir, 'manifests')).catch(() => [] as string[]))
    .filter((name) => name.startsWith(`${component}@`) && name.endsWith('.json'))
    .map((name) => name.slice(component.length + 1, -'.json'.length));
  return [...new Set([...recorded, ...cached])].filter((v) => semverString.safeParse(v).success);
}

export async function requestRollback(deps: CommandDeps, request: RollbackRequest): Promise<CommandReply> {
  const ids = request.request_id ? { request_id: request.request_id } : {};
  if (!(await deps.install.state.lastInstall(request.component))) {
    return {
      v: 1,
      ...ids,
      accepted: false,
      code: 'NOTHING_TO_ROLL_BACK',
      message: `no install of ${request.component} is recorded to roll back (a rollback undoes the last install, once)`,
    };
  }
  const jobId = `rollback-${request.component}-${Date.now()}`;
  await deps.queue.add('rollback', deps.install.seal.sealRollback(request), {
    jobId,
    removeOnComplete: { age: 30 * 24 * 3600 },
    removeOnFail: { age: 30 * 24 * 3600 },
  });
  return { v: 1, ...ids, accepted: true, job_id: jobId, message: `rollback of ${request.component} queued` };
}
