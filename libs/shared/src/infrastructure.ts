import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { connectNats, ensureEventStream, type NatsConnection } from './nats.ts';
import { connectRedis } from './redis.ts';
import type { Shutdown } from './shutdown.ts';

/**
 * What every service connects to first: Redis (BullMQ and shared state) and NATS with the durable event
 * stream. Closers are registered in start order, so shutdown drains NATS before Redis quits.
 */
export async function connectInfrastructure(
  config: { redis: { url: string }; nats: { servers: string } },
  service: string,
  logger: Logger,
  shutdown: Shutdown,
): Promise<{ redis: Redis; nc: NatsConnection }> {
  const redis = await connectRedis(config.redis.url, logger);
  shutdown.add('redis', () => redis.quit());
  const nc = await connectNats(config.nats.servers, `aico-update-${service}`, logger);
  shutdown.add('nats', () => nc.drain());
  await ensureEventStream(nc);
  return { redis, nc };
}
