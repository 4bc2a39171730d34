/*
 * One verified download of a target through our TUF client, in its own process so that its peak RSS
 * is measured alone. Prints one JSON line: { ms, fetchedBytes, resumedFromBytes, maxRssMiB }.
 */
import { join } from 'node:path';
import { TufClient, TufFetcher } from '@aico-update/tuf-client';

const [metadataUrl, targetsUrl, caFile, trustedRoot, stateDir, target, dest] = process.argv.slice(
  2,
) as string[];
const fetcher = new TufFetcher({
  caFile,
  tmpDir: join(stateDir as string, 'tmp'),
  retries: 3,
  retryDelayMs: 50,
});
const client = new TufClient({
  metadataDir: join(stateDir as string, 'metadata'),
  trustedRootFile: trustedRoot as string,
  metadataUrl: metadataUrl as string,
  targetsUrl: targetsUrl as string,
  targetsDir: join(stateDir as string, 'targets'),
  fetcher,
});
const outcome = await client.session(async (session) => {
  const info = await session.targetInfo(target as string);
  if (!info) throw new Error(`no target ${target}`);
  const started = performance.now();
  const result = await session.downloadTarget(info, dest as string, {
    partialDir: join(stateDir as string, 'partials'),
  });
  return { ms: performance.now() - started, ...result };
});
await fetcher.close();
const cpu = process.cpuUsage();
console.log(
  JSON.stringify({
    ...outcome,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
    cpuMs: (cpu.user + cpu.system) / 1000,
  }),
);
