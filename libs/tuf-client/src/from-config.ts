import { join } from 'node:path';
import { type Logger, targetsUrlOf, type tufStateSchema, type updateServerSchema } from '@aico-update/shared';
import type { z } from 'zod';
import { TufClient } from './client.ts';
import { TufFetcher } from './fetcher.ts';
import type { RateLimiter } from './rate-limiter.ts';

/** The TUF client and its fetcher as every service builds them from its `update_server` and `tuf` settings. */
export function createTufClient(
  config: {
    update_server: z.output<typeof updateServerSchema>;
    tuf: z.output<ReturnType<typeof tufStateSchema>>;
  },
  options: {
    userAgent: string;
    logger: Logger;
    rateLimiter?: RateLimiter | undefined;
    /** Keep a mirror of the verified metadata there (see mirror.ts). */
    mirrorDir?: string;
  },
): { client: TufClient; fetcher: TufFetcher } {
  const server = config.update_server;
  const fetcher = new TufFetcher({
    caFile: server.ca_file,
    proxy: server.proxy,
    idleTimeoutMs: server.idle_timeout_seconds * 1000,
    connectTimeoutMs: server.connect_timeout_seconds * 1000,
    retries: server.retries,
    tmpDir: join(config.tuf.state_dir, 'tmp'),
    rateLimiter: options.rateLimiter,
    userAgent: options.userAgent,
  });
  const client = new TufClient({
    metadataDir: join(config.tuf.state_dir, 'metadata'),
    workDir: config.tuf.state_dir,
    trustedRootFile: config.tuf.trusted_root,
    metadataUrl: server.metadata_url,
    targetsUrl: targetsUrlOf(server),
    targetsDir: join(config.tuf.state_dir, 'targets'),
    fetcher,
    logger: options.logger,
    mirrorDir: options.mirrorDir,
  });
  return { client, fetcher };
}
