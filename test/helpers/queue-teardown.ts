import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { closeRedis } from '../../shared/redis.js';
import { deletePrefix } from './autoscaler.js';

/** Drops a test's queue and every key under its prefix, then closes the connection they used. */
export async function dropTestQueue(queue: Queue | undefined, redis: Redis, prefix: string): Promise<void> {
  await queue?.obliterate({ force: true }).catch(() => undefined);
  await queue?.close();
  await deletePrefix(redis, prefix).catch(() => undefined);
  await closeRedis(redis);
}
