import { QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';

export interface EventSubscription {
  events: QueueEvents;
  /** Closes the subscription without hanging on a Redis that was never reached. */
  close(): Promise<void>;
}

/**
 * A queue's event-stream subscription (errors swallowed: its connection retries forever).
 * `QueueEvents.close()` first awaits its connection's readiness, which never comes while Redis has
 * been unreachable since start (taskforcesh/bullmq#4656); such a subscription's close is started
 * but not awaited, so shutdown does not wait out its deadline on a connection that has nothing to flush.
 */
export function subscribeQueueEvents(queue: string, connection: Redis, prefix: string): EventSubscription {
  const events = new QueueEvents(queue, { connection, prefix });
  events.on('error', () => undefined);
  let ready = false;
  events.waitUntilReady().then(
    () => (ready = true),
    () => undefined,
  );
  return {
    events,
    async close() {
      const closing = events.close();
      if (ready) await closing;
      else closing.catch(() => undefined);
    },
  };
}
