import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { describeCause } from './errors.js';
import type { Logger } from './logger.js';
import { GENERATE_QUEUE } from './queues.js';
import { jobPrefix, type ImageStore } from './storage/index.js';

/**
 * Retention that runs by itself: every `intervalMs` the finished jobs (succeeded, failed,
 * canceled) older than JOB_KEEP_AGE_S, or beyond the newest JOB_KEEP_COUNT of each outcome, are
 * removed together with everything stored for them (`jobs/<id>/`: images, the stored result).
 * BullMQ's own removeOnComplete only runs when another job finishes, and never knew the images.
 *
 * Safe with several processes: a sweep holds a Redis lock (SET NX PX, released by compare and
 * delete), and every step is idempotent (a folder already gone, a job already removed), so a
 * sweeper that dies halfway leaves work the next one finishes. The images go first: a job is
 * removed only once its files are, so none is ever left without its record to find it by.
 */

export interface RetentionOptions {
  connection: Redis;
  prefix: string;
  store: Pick<ImageStore, 'deletePrefix'>;
  keepAgeS: number;
  keepCount: number;
  intervalMs: number;
  logger: Logger;
  /** Jobs handled per page of a sweep. */
  pageSize?: number;
  /** The models' queues (each swept with the same rules); default: the `generate` queue alone. */
  queues?: readonly string[];
}

export interface SweepReport {
  removed: number;
  /** Jobs left for the next sweep because their files could not be deleted. */
  deferred: number;
  /** False when another process held the sweep lock. */
  swept: boolean;
}

const RELEASE_SCRIPT = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

export class RetentionSweeper {
  private readonly queues: Queue[];
  private readonly id = randomUUID();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<SweepReport> | undefined;
  private stopped = false;

  constructor(private readonly options: RetentionOptions) {
    const names = options.queues && options.queues.length > 0 ? [...new Set(options.queues)] : [GENERATE_QUEUE];
    this.queues = names.map((name) => new Queue(name, { connection: options.connection, prefix: options.prefix }));
    for (const queue of this.queues) queue.on('error', () => undefined);
  }

  private get lockKey(): string {
    return `${this.options.prefix}:retention:lock`;
  }

  start(): void {
    if (this.timer || this.stopped) return;
    const loop = () => {
      this.timer = setTimeout(() => {
        void this.sweep()
          .catch((err: unknown) => this.options.logger.warn({ err }, 'retention sweep failed; trying again next interval'))
          .finally(() => {
            if (!this.stopped) loop();
          });
      }, this.options.intervalMs);
      this.timer.unref();
    };
    loop();
  }

  /** One sweep now; concurrent calls share it. */
  sweep(): Promise<SweepReport> {
    this.sweeping ??= this.runSweep().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async runSweep(): Promise<SweepReport> {
    const { connection, logger } = this.options;
    // The lock outlives a slow sweep's pages; a sweeper that dies lets it lapse.
    const ttlMs = Math.max(60_000, 2 * this.options.intervalMs);
    if ((await connection.set(this.lockKey, this.id, 'PX', ttlMs, 'NX')) !== 'OK') return { removed: 0, deferred: 0, swept: false };
    try {
      let removed = 0;
      let deferred = 0;
      for (const queue of this.queues) for (const set of ['completed', 'failed'] as const) {
        const skip = new Set<string>();
        for (;;) {
          const ids = (await this.expired(queue, set)).filter((id) => !skip.has(id));
          if (ids.length === 0) break;
          for (const id of ids) {
            if (this.stopped) return { removed, deferred, swept: true };
            if (await this.removeJob(queue, id)) removed += 1;
            else {
              deferred += 1;
              skip.add(id);
            }
          }
        }
      }
      if (removed > 0 || deferred > 0) logger.info({ removed, deferred }, `retention: removed ${removed} finished job(s) and their images`);
      return { removed, deferred, swept: true };
    } finally {
      await connection.eval(RELEASE_SCRIPT, 1, this.lockKey, this.id).catch(() => undefined);
    }
  }

  /** A page of ids due for removal from a finished set: too old, or beyond the newest keepCount. */
  private async expired(queue: Queue, set: 'completed' | 'failed'): Promise<string[]> {
    const { connection, keepAgeS, keepCount } = this.options;
    const page = this.options.pageSize ?? 200;
    const key = queue.toKey(set);
    // BullMQ scores its finished sets by finish time (ms).
    const old = await connection.zrangebyscore(key, '-inf', Date.now() - keepAgeS * 1000, 'LIMIT', 0, page);
    const total = await connection.zcard(key);
    const surplus = total > keepCount ? await connection.zrange(key, 0, Math.min(total - keepCount, page) - 1) : [];
    return [...new Set([...old, ...surplus])].slice(0, page);
  }

  /** Files first, then the job; false when the files could not be deleted (the job stays for the next sweep). */
  private async removeJob(queue: Queue, id: string): Promise<boolean> {
    try {
      await this.options.store.deletePrefix?.(jobPrefix(id));
    } catch (err) {
      this.options.logger.warn({ err, jobId: id }, `retention: could not delete the files of job ${id} (${describeCause(err)}); keeping it for the next sweep`);
      return false;
    }
    // 0 when it is already gone (another sweeper, a client): fine either way.
    await queue.remove(id);
    return true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.sweeping?.catch(() => undefined);
    await Promise.allSettled(this.queues.map((q) => q.close()));
  }
}
