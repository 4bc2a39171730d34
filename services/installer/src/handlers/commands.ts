import { join } from 'node:path';
import {
  type CommandReply,
  downloadedRecordSchema,
  enqueueInstall,
  hashFile,
  type InstallRequest,
  type RollbackRequest,
  StateKeys,
} from '@aico-update/shared';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { gt, rcompare } from 'semver';
import { LAST_INSTALL_KEY } from './install-release.ts';

/*
 * Operator commands (from the bus gateway, the control API or any NATS client). An install request is
 * accepted only for a release the downloader verified: its manifest must still hash to the signed
 * digest. Nothing a command says can make the installer install something TUF did not sign.
 */

export interface CommandDeps {
  redis: Redis;
  queue: Queue;
  cacheDir: string;
}

export async function requestInstall(deps: CommandDeps, request: InstallRequest): Promise<CommandReply> {
  const refuse = (code: string, message: string): CommandReply => ({
    v: 1,
    ...(request.request_id ? { request_id: request.request_id } : {}),
    accepted: false,
    code,
    message,
  });
  const downloaded = await deps.redis.hgetall(StateKeys.downloaded);
  const installed = await deps.redis.hget(StateKeys.installed, request.component);
  const versions = Object.keys(downloaded)
    .filter((key) => key.startsWith(`${request.component}@`))
    .map((key) => key.slice(request.component.length + 1))
    .sort(rcompare);
  const version = request.version ?? versions.find((v) => !installed || gt(v, installed)) ?? versions[0];
  const raw = version ? downloaded[`${request.component}@${version}`] : undefined;
  if (!version || !raw) {
    return refuse(
      'NOT_DOWNLOADED',
      `${request.component} ${request.version ?? '(newest)'} is not downloaded and verified; downloaded: ${versions.join(', ') || 'none'}. Check for updates and let the download finish first`,
    );
  }
  const record = downloadedRecordSchema.safeParse(JSON.parse(raw));
  if (!record.success) {
    return refuse(
      'NOT_DOWNLOADED',
      `the download record of ${request.component} ${version} is incomplete; download it again`,
    );
  }
  const manifest = join(deps.cacheDir, 'manifests', `${request.component}@${version}.json`);
  const digest = (await hashFile(manifest).catch(() => undefined))?.sha256;
  if (digest !== record.data.manifest_sha256 || digest !== record.data.release.target.sha256) {
    return refuse(
      'NOT_VERIFIED',
      `the manifest of ${request.component} ${version} in the cache does not match its signed digest; it will not be installed. Download it again`,
    );
  }
  const jobId = await enqueueInstall(
    deps.queue,
    {
      v: 1,
      release: record.data.release,
      reason: 'request',
      ...(request.auto_restart === false ? { auto_restart: false } : {}),
    },
    { retry: true },
  );
  return {
    v: 1,
    ...(request.request_id ? { request_id: request.request_id } : {}),
    accepted: true,
    job_id: jobId,
    message: `install of ${request.component} ${version} queued${installed ? ` (installed: ${installed})` : ''}`,
  };
}

export async function requestRollback(deps: CommandDeps, request: RollbackRequest): Promise<CommandReply> {
  const ids = request.request_id ? { request_id: request.request_id } : {};
  if (!(await deps.redis.hexists(LAST_INSTALL_KEY, request.component))) {
    return {
      v: 1,
      ...ids,
      accepted: false,
      code: 'NOTHING_TO_ROLL_BACK',
      message: `no install of ${request.component} is recorded to roll back (a rollback undoes the last install, once)`,
    };
  }
  const jobId = `rollback-${request.component}-${Date.now()}`;
  await deps.queue.add('rollback', request, {
    jobId,
    removeOnComplete: { age: 30 * 24 * 3600 },
    removeOnFail: { age: 30 * 24 * 3600 },
  });
  return { v: 1, ...ids, accepted: true, job_id: jobId, message: `rollback of ${request.component} queued` };
}
