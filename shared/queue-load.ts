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
  /**
   * When the oldest job that needs a worker and has none was created (ms epoch; the head of the
   * wait list, the first prioritized job, the first due retry); null when none waits. With fewer
   * slots than models, the model whose oldest job has waited longest gets the next slot.
   */
  oldestWaitingAt?: number | null;
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
    /** The model's queue (default: the default model's). */
    private readonly queueName: string = GENERATE_QUEUE,
  ) {
    this.queue = new Queue(queueName, { connection, prefix });
    this.queue.on('error', () => undefined);
  }

  /**
   * One MULTI, so the parts add up to a consistent snapshot. Queued jobs whose ttl_s ran out are
   * ended (`expired`) first: they will never run, so they are no load to scale for.
   */
  async read(): Promise<QueueLoad> {
    await expireDueJobs(this.connection, this.prefix, this.queue.toKey(''), Date.now(), this.queueName);
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
      .lindex(key('wait'), -1)
      .zrange(key('prioritized'), 0, 0)
      .zrangebyscore(key('delayed'), '-inf', `(${(now + 1) * DELAYED_SCORE_FACTOR}`, 'LIMIT', 0, 1)
      .exec();
    if (!replies) throw new Error('queue load: transaction aborted');
    for (const [err] of replies) if (err) throw err;
    const [waiting, paused, prioritized, active, delayed, delayedDue] = replies.slice(0, 6).map(([, value]) => Number(value)) as [number, number, number, number, number, number];
    const heads = [replies[6]?.[1] as string | null, ...((replies[7]?.[1] as string[]) ?? []), ...((replies[8]?.[1] as string[]) ?? [])].filter((id): id is string => typeof id === 'string');
    const stamps = heads.length === 0 ? [] : await Promise.all(heads.map((id) => this.connection.hget(key(id), 'timestamp')));
    const created = stamps.map(Number).filter((t) => Number.isFinite(t) && t > 0);
    return {
      load: waiting + prioritized + delayedDue + active,
      waiting,
      prioritized,
      active,
      delayedDue,
      delayed,
      paused,
      oldestWaitingAt: created.length > 0 ? Math.min(...created) : null,
      at: now,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.close();
  }
}

/** Every model's load, from its own queue (GET /v1/queue, GET /v1/models, the autoscaler, KEDA). */
export class ModelQueueLoads {
  private readonly loads: Map<string, BullQueueLoad>;

  constructor(connection: Redis, prefix: string, models: readonly { name: string; queue: string }[]) {
    this.loads = new Map(models.map((m) => [m.name, new BullQueueLoad(connection, prefix, m.queue)]));
  }

  get names(): string[] {
    return [...this.loads.keys()];
  }

  /** One model's load; null for a name not served. */
  async readModel(name: string): Promise<QueueLoad | null> {
    return (await this.loads.get(name)?.read()) ?? null;
  }

  async readAll(): Promise<Map<string, QueueLoad>> {
    const entries = await Promise.all([...this.loads].map(async ([name, load]) => [name, await load.read()] as const));
    return new Map(entries);
  }

  /** The sum over every model (the whole service's load). */
  async read(): Promise<QueueLoad> {
    return sumQueueLoads([...(await this.readAll()).values()], Date.now());
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.loads.values()].map((l) => l.close()));
  }
}

/** Several queues' loads added up (the oldest waiting job of them all), as read at `at`. */
export function sumQueueLoads(loads: readonly QueueLoad[], at: number): QueueLoad {
  const sum = (field: 'load' | 'waiting' | 'prioritized' | 'active' | 'delayedDue' | 'delayed' | 'paused') => loads.reduce((n, l) => n + l[field], 0);
  const oldest = loads.map((l) => l.oldestWaitingAt).filter((t): t is number => typeof t === 'number');
  return {
    load: sum('load'),
    waiting: sum('waiting'),
    prioritized: sum('prioritized'),
    active: sum('active'),
    delayedDue: sum('delayedDue'),
    delayed: sum('delayed'),
    paused: sum('paused'),
    oldestWaitingAt: oldest.length > 0 ? Math.min(...oldest) : null,
    at,
  };
}
