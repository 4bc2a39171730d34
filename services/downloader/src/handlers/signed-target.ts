import type { SignedFile } from '@aico-update/shared';
import { TufError, type TufSession } from '@aico-update/tuf-client';
import type { TargetFile } from 'tuf-js';
import type { NeededFile } from '../domain/plan-download.ts';

/** A signed target's info, checked against what the manifest says of it. */
export async function signedTarget(session: TufSession, file: SignedFile | NeededFile): Promise<TargetFile> {
  const info = await session.targetInfo(file.target);
  if (!info || info.length !== file.length || info.hashes.sha256 !== file.sha256) {
    throw new TufError(
      'attack',
      'TUF_MANIFEST_MISMATCH',
      `${file.target}: the manifest and the signed targets disagree about it`,
    );
  }
  return info;
}
