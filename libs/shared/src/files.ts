import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** Length and sha256 of a file, streamed (memory does not grow with the file). */
export async function hashFile(path: string): Promise<{ length: number; sha256: string }> {
  const hash = createHash('sha256');
  let length = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    length += (chunk as Buffer).length;
  }
  return { length, sha256: hash.digest('hex') };
}
