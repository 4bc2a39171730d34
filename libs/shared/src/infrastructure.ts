import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
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
  config: { redis: { url: string }; nats: { servers: string } },
  service: string,
  logger: Logger,
  shutdown: Shutdown,
): Promise<{ redis: Redis; nc: NatsConnection; readiness: ReadinessCheck[] }> {
  const redis = await connectRedis(config.redis.url, logger);
  shutdown.add('redis', () => redis.quit());
  const nc = await connectNats(config.nats.servers, `aico-update-${service}`, logger);
  shutdown.add('nats', () => nc.drain());
  await ensureEventStream(nc);
  const readiness: ReadinessCheck[] = [
    { name: 'redis', check: async () => void (await redis.ping()) },
    { name: 'nats', check: async () => void (await nc.flush()) },
  ];
  return { redis, nc, readiness };
}
