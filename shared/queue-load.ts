import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { expireDueJobs } from './queued-jobs.js';
import { GENERATE_QUEUE } from './queues.js';

/**
 * The queue's full load: every job that needs a worker now. BullMQ keeps jobs in several
 * structures, and the wait list alone undercounts (the mistake of KEDA's redis-lists scaler on
 * BullMQ): prioritized jobs live in a sorted set, retries wait in `delayed` (and with no worker
 * running nobody promotes them once due), and running jobs are in `active`, which must count or a
 * busy worker looks idle and is scaled away.
 */
export interface QueueLoad {
  /** waiting + prioritized + delayedDue + active: the number the autoscaler and KEDA scale on. */
  load: number;
  waiting: number;
  prioritized: number;
  active: number;
  /** Delayed jobs whose time has come (a retry after its backoff). */
  delayedDue: number;
  /** All delayed jobs, due or not (informational). */
  delayed: number;
  /** Jobs in a paused queue: no worker may take them, so they are not load. */
  paused: number;
  at: number;
}

export interface QueueLoadSource {
  read(): Promise<QueueLoad>;
  close(): Promise<void>;
}

/** BullMQ scores delayed jobs as `timestamp * 0x1000 + counter` (see getDelayedScore.lua). */
const DELAYED_SCORE_FACTOR = 0x1000;

export class BullQueueLoad implements QueueLoadSource {
  private readonly queue: Queue;
  private closed = false;

  constructor(
    private readonly connection: Redis,
    private readonly prefix: string,
  ) {
    this.queue = new Queue(GENERATE_QUEUE, { connection, prefix });
    this.queue.on('error', () => undefined);
  }

  /**
   * One MULTI, so the parts add up to a consistent snapshot. Queued jobs whose ttl_s ran out are
   * ended (`expired`) first: they will never run, so they are no load to scale for.
   */
  async read(): Promise<QueueLoad> {
    await expireDueJobs(this.connection, this.prefix, this.queue.toKey(''));
    const now = Date.now();
    const key = (type: string) => this.queue.toKey(type);
    const replies = await this.connection
      .multi()
      .llen(key('wait'))
      .llen(key('paused'))
      .zcard(key('prioritized'))
      .llen(key('active'))
      .zcard(key('delayed'))
      .zcount(key('delayed'), '-inf', `(${(now + 1) * DELAYED_SCORE_FACTOR}`)
      .exec();
    if (!replies) throw new Error('queue load: transaction aborted');
    const [waiting, paused, prioritized, active, delayed, delayedDue] = replies.map(([err, value]) => {
      if (err) throw err;
      return Number(value);
    }) as [number, number, number, number, number, number];
    return {
      load: waiting + prioritized + delayedDue + active,
      waiting,
      prioritized,
      active,
      delayedDue,
      delayed,
      paused,
      at: now,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.close();
  }
}
