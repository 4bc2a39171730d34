import {
  type CommandReply,
  channelIncludes,
  type DownloadRequest,
  downloadJobId,
  enqueueDownload,
  type Logger,
  type ReleaseHold,
  type ReleaseRef,
  replies,
  semverString,
  type UpdatePolicy,
} from '@aico-update/shared';
import { releaseOfTarget, signedRelease, type TufClient } from '@aico-update/tuf-client';
import type { Queue } from 'bullmq';
import semver from 'semver';
import type { DownloadState } from '../adapters/redis-state.ts';

/*
 * Downloads on request (AICO's DownloadUpdateRequest, the control API): a release named, or the newest
 * one the channel offers that is newer than the installed one and not held back. It must be signed now
 * (looked up in freshly verified metadata); a download that failed for good is retried from scratch
 * (the blobs already verified stay in the cache, a partial file resumes).
 */

export interface DownloadRequestDeps {
  client: TufClient;
  queue: Queue;
  /** Before the first retry of a failed attempt (doubling after). */
  retryDelayMs: number;
  state: DownloadState;
  policy: UpdatePolicy;
  holds: () => Promise<ReleaseHold[]>;
  decide: (entry: {
    kind: 'download_requested';
    component: string;
    version: string;
    reason: string;
  }) => Promise<void>;
  logger: Logger;
}

export async function requestDownload(
  deps: DownloadRequestDeps,
  request: DownloadRequest,
): Promise<CommandReply> {
  const { ids, refuse } = replies(request);
  const { component } = request;
  if (request.version !== undefined && !semverString.safeParse(request.version).success) {
    return refuse(
      'BAD_REQUEST',
      `version "${request.version.slice(0, 100)}" is not a semver version such as 1.2.0`,
    );
  }
  const installed = (await deps.state.installed())[component];
  const holds = await deps.holds();
  const release = await deps.client.session(async (session): Promise<ReleaseRef | undefined> => {
    if (request.version) return signedRelease(session, { component, version: request.version });
    const offered: ReleaseRef[] = [];
    for (const [path, info] of session.targets) {
      const candidate = releaseOfTarget(path, info);
      if (!candidate || candidate.component !== component) continue;
      if (!channelIncludes(deps.policy.channel, candidate.channel)) continue;
      if (installed && !semver.gt(candidate.version, installed)) continue;
      if (installed && candidate.min_from_version && semver.lt(installed, candidate.min_from_version))
        continue;
      if (holds.some((h) => h.component === component && h.version === candidate.version)) continue;
      offered.push(candidate);
    }
    return offered.sort((a, b) => semver.rcompare(a.version, b.version))[0];
  });
  if (!release) {
    return request.version
      ? refuse(
          'RELEASE_NOT_SIGNED',
          `${component} ${request.version}: the trusted metadata signs no such release (withdrawn, or never published); nothing is downloaded`,
        )
      : refuse(
          'NOTHING_TO_DOWNLOAD',
          `no ${component} release newer than ${installed ?? 'the installed one'} is offered on the ${deps.policy.channel} channel (held-back releases are not chosen as the newest; name one to download it)`,
        );
  }
  const pointer = { component: release.component, version: release.version };
  const { jobId, replaced } = await enqueueDownload(
    deps.queue,
    { v: 1, release: pointer, reason: 'request' },
    { retry: true, backoffMs: deps.retryDelayMs },
  );
  const message = replaced
    ? `retrying the download of ${component} ${release.version} (the last attempt ${replaced})`
    : `download of ${component} ${release.version} queued`;
  await deps.decide({
    kind: 'download_requested',
    ...pointer,
    reason: `${message}${request.source ? `; asked by ${request.source}` : ''}`,
  });
  deps.logger.info({ ...pointer, job_id: jobId, source: request.source }, message);
  return { v: 1, ...ids, accepted: true, job_id: jobId ?? downloadJobId(pointer), message };
}
