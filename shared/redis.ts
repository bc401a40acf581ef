import { Redis, type RedisOptions } from 'ioredis';

/**
 * Redis connections as BullMQ's production guide asks. Workers and event subscribers block and
 * must retry forever (`maxRetriesPerRequest: null`); the API's connection fails fast instead
 * (no offline queue, one retry), so a request gets a 503 within a second, not a hung socket.
 *
 * Every connection waits for Redis to be ready after each (re)connect (ioredis' ready check):
 * a restarted Redis accepts connections while it still loads its AOF and answers LOADING to
 * everything. A worker whose finished job's completion was refused that way left the job to
 * lapse and run again elsewhere; with the check, commands wait in the offline queue instead.
 */
export type RedisRole = 'worker' | 'api' | 'subscriber';

/**
 * Errors after which the connection is dropped and the command sent again once Redis is ready:
 * LOADING (a replica or restarted server loading its data) and READONLY (a failover demoted the
 * server this connection reached; the address now leads to the new primary).
 */
export function reconnectOnError(err: Error): 2 | false {
  return /^(LOADING|READONLY)\b/.test(err.message) ? 2 : false;
}

export function createRedis(url: string, role: RedisRole, extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    connectTimeout: 2000,
    // Reconnect forever with a backoff capped at a second (a restarted Redis is used within about
    // a second of answering); it is the per-command policy that differs.
    retryStrategy: (times) => Math.min(times * 100, 1000),
    enableReadyCheck: true,
    reconnectOnError,
    ...extra,
  };
  if (role === 'api') {
    return new Redis(url, { ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false });
  }
  return new Redis(url, { ...common, maxRetriesPerRequest: null });
}

/** QUIT when connected (pending replies arrive), drop the socket otherwise (nothing to wait for). */
export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'ready') {
    await redis.quit();
  } else {
    redis.disconnect();
  }
}
