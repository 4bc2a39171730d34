import { readFile } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { AppError } from './errors.ts';
import type { ReadinessCheck } from './http.ts';
import { connectNats, ensureEventStream, type NatsConnection } from './nats.ts';
import { connectRedis } from './redis.ts';
import type { Shutdown } from './shutdown.ts';

/**
 * What every service connects to first: Redis (BullMQ and shared state) and NATS with the durable event
 * stream. Closers are registered in start order, so shutdown drains NATS before Redis quits. The
 * readiness checks of both go into every service's /readyz.
 */
export async function connectInfrastructure(
  config: {
    redis: { url: string; username: string; password_file: string };
    nats: { servers: string; user: string; password_file: string };
  },
  service: string,
  logger: Logger,
  shutdown: Shutdown,
): Promise<{ redis: Redis; nc: NatsConnection; readiness: ReadinessCheck[] }> {
  const redis = await connectRedis(config.redis.url, logger, {
    username: config.redis.username,
    password: await secretFrom(config.redis.password_file, 'redis.password_file'),
  });
  shutdown.add('redis', () => redis.quit());
  const nc = await connectNats(config.nats.servers, `aico-update-${service}`, logger, {
    user: config.nats.user,
    pass: await secretFrom(config.nats.password_file, 'nats.password_file'),
  });
  shutdown.add('nats', () => nc.drain());
  await ensureEventStream(nc);
  const readiness: ReadinessCheck[] = [
    { name: 'redis', check: async () => void (await redis.ping()) },
    { name: 'nats', check: async () => void (await nc.flush()) },
  ];
  return { redis, nc, readiness };
}

/** A password from its file (the deployment's generated secrets); never logged. */
async function secretFrom(file: string, key: string): Promise<string | undefined> {
  if (!file) return undefined;
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (error) {
    throw new AppError(
      'SECRET_UNREADABLE',
      `cannot read ${key} ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); in the compose deployment the secrets service writes it: check that it ran (docker compose logs secrets)`,
      { cause: error },
    );
  }
}
