import type { Redis } from 'ioredis';
import { cancelChannel, canceledKey } from './queues.js';

/**
 * Cancellation across processes. The API marks a job canceled (a key with a TTL) and publishes
 * its id; every worker listens and aborts the job if it holds it. The marker covers the race
 * where the cancel arrives while a worker is just taking the job: the processor checks it first.
 */
export class JobControl {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly markerTtlS: number,
  ) {}

  async markCanceled(jobId: string): Promise<void> {
    await this.redis.set(canceledKey(this.prefix, jobId), String(Date.now()), 'EX', this.markerTtlS);
  }

  async isCanceled(jobId: string): Promise<boolean> {
    return (await this.redis.exists(canceledKey(this.prefix, jobId))) === 1;
  }

  /** Asks whichever worker runs `jobId` to abort it; resolves with how many workers heard it. */
  async requestAbort(jobId: string): Promise<number> {
    return this.redis.publish(cancelChannel(this.prefix), jobId);
  }
}

/**
 * Subscribes `subscriber` (a connection of its own: it can do nothing else once subscribed) to
 * cancel requests. Resolves once subscribed, with a function that unsubscribes.
 */
export async function listenForCancels(subscriber: Redis, prefix: string, onCancel: (jobId: string) => void): Promise<() => Promise<void>> {
  const channel = cancelChannel(prefix);
  const handler = (from: string, message: string) => {
    if (from === channel) onCancel(message);
  };
  subscriber.on('message', handler);
  await subscriber.subscribe(channel);
  return async () => {
    subscriber.off('message', handler);
    await subscriber.unsubscribe(channel).catch(() => undefined);
  };
}
