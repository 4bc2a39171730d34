import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TufClient, TufFetcher } from '@aico-update/tuf-client';

/*
 * The client protocol of the public TUF conformance suite, on the same TufClient and fetcher the checker
 * uses (staging + atomic commit, locking, classification):
 *   --metadata-dir D init TRUSTED_ROOT
 *   --metadata-url U --metadata-dir D refresh
 *   --metadata-url U --metadata-dir D --target-name T [--target-name T2 …] --target-dir TD --target-base-url TB download
 * Exit 0 on success, 1 on failure (the reason on stderr).
 */

const USAGE =
  'usage: tuf-conformance-client --metadata-dir D init TRUSTED_ROOT\n' +
  '       tuf-conformance-client --metadata-url U --metadata-dir D refresh\n' +
  '       tuf-conformance-client --metadata-url U --metadata-dir D --target-name T... --target-dir TD --target-base-url TB download';

export async function conformanceClient(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'metadata-dir': { type: 'string' },
      'metadata-url': { type: 'string' },
      'target-name': { type: 'string', multiple: true },
      'target-dir': { type: 'string' },
      'target-base-url': { type: 'string' },
    },
  });
  const [command, trustedRoot] = positionals;
  const metadataDir = values['metadata-dir'];
  if (!metadataDir || !command) {
    console.error(USAGE);
    return 1;
  }
  if (command === 'init') {
    if (!trustedRoot) {
      console.error(USAGE);
      return 1;
    }
    await mkdir(metadataDir, { recursive: true });
    await copyFile(trustedRoot, join(metadataDir, 'root.json'));
    return 0;
  }
  const metadataUrl = values['metadata-url'];
  if (!metadataUrl || (command !== 'refresh' && command !== 'download')) {
    console.error(USAGE);
    return 1;
  }
  const targetsDir = values['target-dir'] ?? join(metadataDir, '..', 'targets');
  const fetcher = new TufFetcher({
    retries: 0,
    idleTimeoutMs: 10_000,
    tmpDir: join(metadataDir, '..', '.tuf-tmp'),
  });
  const client = new TufClient({
    metadataDir,
    trustedRootFile: join(metadataDir, 'root.json'),
    metadataUrl,
    targetsUrl: values['target-base-url'] ?? metadataUrl,
    targetsDir,
    fetcher,
  });
  try {
    await client.session(async (session) => {
      if (command !== 'download') return;
      for (const name of values['target-name'] ?? []) {
        const info = await session.targetInfo(name);
        if (!info) throw new Error(`target ${name} is not in the trusted metadata`);
        await session.fetchTarget(info);
      }
    });
    return 0;
  } catch (error) {
    const code = (error as { code?: string }).code;
    console.error(
      `tuf-conformance-client: ${command} failed${code ? ` (${code})` : ''}: ${(error as Error).message}`,
    );
    return 1;
  } finally {
    await fetcher.close();
  }
}
