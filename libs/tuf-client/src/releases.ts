import {
  type ReleasePointer,
  type ReleaseRef,
  releaseCustomSchema,
  releaseTargetPath,
} from '@aico-update/shared';
import type { TargetFile } from '@tufjs/models';
import type { TufSession } from './client.ts';

/*
 * A release as the signed targets metadata describes it: the one source every service reads a release's
 * critical flag, channel, notes and manifest digest from. Jobs, commands and Redis records only point.
 */

/** The release a signed target describes, or undefined when its `custom.aico` is not a valid release. */
export function releaseOfTarget(path: string, info: TargetFile): ReleaseRef | undefined {
  const parsed = releaseCustomSchema.safeParse(info.custom?.aico);
  const sha256 = info.hashes.sha256;
  if (!parsed.success || !sha256 || path !== releaseTargetPath(parsed.data.component, parsed.data.version)) {
    return undefined;
  }
  return { ...parsed.data, target: { path, length: info.length, sha256 } };
}

/** The signed release a pointer names, as the session's verified metadata has it now; undefined: not signed. */
export async function signedRelease(
  session: TufSession,
  pointer: ReleasePointer,
): Promise<ReleaseRef | undefined> {
  const path = releaseTargetPath(pointer.component, pointer.version);
  const info = await session.targetInfo(path);
  return info ? releaseOfTarget(path, info) : undefined;
}
