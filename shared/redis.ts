import { Redis, type RedisOptions } from 'ioredis';

/**
 * Redis connections as BullMQ's production guide asks. Workers and event subscribers block and
 * must retry forever (`maxRetriesPerRequest: null`); the API's connection fails fast instead
 * (no offline queue, one retry), so a request gets a 503 within a second, not a hung socket.
 */
export type RedisRole = 'worker' | 'api' | 'subscriber';

export function createRedis(url: string, role: RedisRole, extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    connectTimeout: 2000,
    // Reconnect forever with a capped backoff; it is the per-command policy that differs.
    retryStrategy: (times) => Math.min(times * 200, 2000),
    ...extra,
  };
  if (role === 'api') {
    return new Redis(url, { ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false });
  }
  return new Redis(url, { ...common, maxRetriesPerRequest: null, enableReadyCheck: false });
}

/** QUIT when connected (pending replies arrive), drop the socket otherwise (nothing to wait for). */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'ready') {
    await redis.quit();
  } else {
    redis.disconnect();
  }
}
