import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { AppError } from './errors.ts';

/**
 * Connects to Redis, failing at start with a message that names the URL and the cause. Afterwards
 * ioredis reconnects by itself (a Redis restart is an interruption); connection errors are logged once
 * per distinct message instead of once per retry.
 */
export async function connectRedis(
  url: string,
  logger: Logger,
  credentials: { username?: string; password?: string } = {},
): Promise<Redis> {
  const redis = new Redis(url, {
    maxRetriesPerRequest: null,
    lazyConnect: true,
    ...(credentials.username ? { username: credentials.username } : {}),
    ...(credentials.password ? { password: credentials.password } : {}),
  });
  let lastError: Error | undefined;
  let lastLogged = '';
  redis.on('error', (error: Error) => {
    lastError = error;
    if (error.message !== lastLogged) {
      lastLogged = error.message;
      logger.warn({ err: error }, `Redis connection error: ${error.message}`);
    }
  });
  redis.on('ready', () => {
    lastLogged = '';
  });
  try {
    await redis.connect();
  } catch (error) {
    redis.disconnect();
    const cause = lastError ?? (error as Error);
    throw new AppError(
      'REDIS_UNREACHABLE',
      `cannot connect to Redis at ${url} (${cause.message}); check redis.url and that Redis is running`,
      { cause },
    );
  }
  return redis;
}
