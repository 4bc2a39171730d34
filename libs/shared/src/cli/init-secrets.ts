import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { natsConfig, redisAclFile, SERVICE_USERS, type ServiceUser } from '../access.ts';
import { keptSecret, parseSecret, randomSecret, writeFileAtomic } from '../files.ts';

/*
 * aico-update-secrets: the one-shot service that runs before everything else on every `docker compose
 * up` (no step for the operator). It makes a Redis and a NATS password for each service the first time,
 * keeps them afterwards, and writes Redis's ACL file and the NATS configuration from them
 * (access.ts). Each service's passwords go to a volume only that service mounts; the ACL file and the
 * NATS configuration to volumes only Redis and NATS mount. Idempotent; never prints a secret.
 *
 *   init-secrets --redis DIR --nats DIR [--grafana DIR] --service checker=DIR --service downloader=DIR …
 */

export const PASSWORD_FILES = { redis: 'redis-password', nats: 'nats-password' } as const;

/** 0644: each folder is a volume only its service (and this one) mounts; the service runs as another user. */
async function passwordIn(dir: string, file: string): Promise<{ password: string; made: boolean }> {
  const { value, made } = await keptSecret(join(dir, file), {
    parse: parseSecret,
    make: randomSecret,
    mode: 0o644,
  });
  return { password: value, made };
}

export async function initSecrets(options: {
  redisDir: string;
  natsDir: string;
  serviceDirs: Record<ServiceUser, string>;
  /** Grafana's admin password (the monitoring profile), in a folder only Grafana mounts. */
  grafanaDir?: string | undefined;
}): Promise<{ made: string[] }> {
  const redis = {} as Record<ServiceUser, string>;
  const nats = {} as Record<ServiceUser, string>;
  const made: string[] = [];
  for (const user of SERVICE_USERS) {
    const dir = options.serviceDirs[user];
    await mkdir(dir, { recursive: true });
    for (const [kind, file] of Object.entries(PASSWORD_FILES) as [keyof typeof PASSWORD_FILES, string][]) {
      const { password, made: fresh } = await passwordIn(dir, file);
      (kind === 'redis' ? redis : nats)[user] = password;
      if (fresh) made.push(`${user}/${file}`);
    }
  }
  if (options.grafanaDir) {
    await mkdir(options.grafanaDir, { recursive: true });
    if ((await passwordIn(options.grafanaDir, 'admin-password')).made) made.push('grafana/admin-password');
  }
  await mkdir(options.redisDir, { recursive: true });
  await mkdir(options.natsDir, { recursive: true });
  await writeFileAtomic(join(options.redisDir, 'users.acl'), redisAclFile(redis), 0o644);
  await writeFileAtomic(join(options.natsDir, 'nats.conf'), natsConfig(nats), 0o644);
  return { made };
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      redis: { type: 'string' },
      nats: { type: 'string' },
      grafana: { type: 'string' },
      service: { type: 'string', multiple: true },
    },
  });
  const serviceDirs = Object.fromEntries(
    (values.service ?? []).map((pair) => pair.split('=') as [string, string]),
  ) as Record<ServiceUser, string>;
  const missing = SERVICE_USERS.filter((user) => !serviceDirs[user]);
  if (!values.redis || !values.nats || missing.length > 0) {
    console.error(
      `init-secrets: needs --redis DIR --nats DIR and --service NAME=DIR for ${SERVICE_USERS.join(', ')}${missing.length ? ` (missing: ${missing.join(', ')})` : ''}`,
    );
    process.exit(64);
  }
  const { made } = await initSecrets({
    redisDir: values.redis,
    natsDir: values.nats,
    serviceDirs,
    grafanaDir: values.grafana,
  });
  console.log(
    made.length > 0
      ? `made ${made.length} new password(s) (${made.join(', ')}); wrote the Redis ACL file and the NATS configuration`
      : 'kept every password; wrote the Redis ACL file and the NATS configuration',
  );
}
