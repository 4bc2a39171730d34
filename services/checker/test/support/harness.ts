import { join } from 'node:path';
import type { TestRepository } from '@aico-update/release/testing';
import { loadConfig } from '@aico-update/shared';
import type { SpawnedServer } from '@aico-update/shared/testing';
import { pino } from 'pino';
import { checkerConfigSchema } from '../../src/config.ts';
import { type RunningChecker, startChecker } from '../../src/main.ts';

let counter = 0;

/** The environment a deployed checker would get, pointed at the test repository and servers. */
export function checkerEnv(
  t: TestRepository,
  redis: SpawnedServer,
  nats: SpawnedServer,
  env: Record<string, string> = {},
): Record<string, string> {
  counter += 1;
  return {
    AICO_UPDATE_SERVER_METADATA_URL: t.metadataUrl,
    AICO_UPDATE_SERVER_CA_FILE: t.caFile,
    AICO_UPDATE_SERVER_IDLE_TIMEOUT_SECONDS: '1.5',
    AICO_UPDATE_SERVER_RETRIES: '0',
    AICO_TUF_STATE_DIR: join(t.workDir, `checker-${counter}`),
    AICO_TUF_TRUSTED_ROOT: t.repo.trustedRootPath,
    AICO_INSTALLED: 'backend=1.0.0',
    AICO_REDIS_URL: redis.url,
    AICO_NATS_SERVERS: nats.url,
    AICO_HTTP_HOST: '127.0.0.1',
    AICO_HTTP_PORT: '0',
    ...env,
  };
}

export async function startTestChecker(
  t: TestRepository,
  redis: SpawnedServer,
  nats: SpawnedServer,
  env: Record<string, string> = {},
  schedule = false,
): Promise<RunningChecker> {
  const config = loadConfig(checkerConfigSchema, { env: checkerEnv(t, redis, nats, env) });
  return startChecker(config, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }), schedule });
}
