import os from 'node:os';
import type { Redis } from 'ioredis';
import { withDeadline } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { WorkerRegistry, type WorkerRecord } from '../shared/worker-registry.js';
import type { WorkerState } from './consumer.js';

export interface HeartbeatOptions {
  redis: Redis;
  prefix: string;
  workerId: string;
  slot: string;
  model: string;
  intervalMs: number;
  logger: Logger;
}

/**
 * The worker's entry in the registry: written at once on every state change and job boundary,
 * and every `intervalMs` in between. The record expires after three missed beats, so a worker
 * killed with -9 disappears without anyone cleaning up after it; a worker that stops removes it.
 */
export class Heartbeat {
  private readonly registry: WorkerRegistry;
  private readonly record: WorkerRecord;
  private readonly ttlMs: number;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private failing = false;

  constructor(private readonly options: HeartbeatOptions) {
    this.registry = new WorkerRegistry(options.redis, options.prefix);
    this.ttlMs = Math.max(1000, options.intervalMs * 3);
    const now = Date.now();
    this.record = {
      id: options.workerId,
      slot: options.slot,
      state: 'starting',
      currentJob: null,
      startedAt: now,
      lastSeenAt: now,
      jobsDone: 0,
      jobsFailed: 0,
      host: os.hostname(),
      pid: process.pid,
      model: options.model,
      paused: null,
      currentJobToken: null,
    };
  }

  start(): void {
    if (this.timer || this.stopping) return;
    this.beat();
    this.timer = setInterval(() => this.beat(), this.options.intervalMs);
    this.timer.unref();
  }

  setState(state: WorkerState): void {
    if (state === 'stopped') {
      void this.stop();
      return;
    }
    this.record.state = state;
    this.beat();
  }

  /** Why the worker takes no jobs for now (storage failing), or null again. */
  setPaused(reason: string | null): void {
    this.record.paused = reason;
    this.beat();
  }

  /** Wraps the job processor so the record names the running job and counts finished ones. */
  track<J extends { id?: string | undefined; token?: string | undefined }, A extends unknown[], R>(
    fn: (job: J, ...rest: A) => Promise<R>,
  ): (job: J, ...rest: A) => Promise<R> {
    return async (job, ...rest) => {
      this.record.currentJob = job.id ?? null;
      this.record.currentJobToken = job.token ?? null;
      this.beat();
      try {
        const result = await fn(job, ...rest);
        this.record.jobsDone += 1;
        return result;
      } catch (err) {
        this.record.jobsFailed += 1;
        throw err;
      } finally {
        this.record.currentJob = null;
        this.record.currentJobToken = null;
        this.beat();
      }
    };
  }

  /** Stops beating and removes the record; gives up after a second (the record expires anyway). Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.timer);
      const removal = this.writing
        .then(() => this.registry.remove(this.record.id))
        .catch((err: unknown) => this.options.logger.warn({ err }, 'could not remove the worker record'));
      await withDeadline(removal, 1000, () => new Error('worker record removal timed out')).catch(() => undefined);
    })();
    return this.stopping;
  }

  private beat(): void {
    if (this.stopping) return;
    const snapshot = { ...this.record, lastSeenAt: Date.now() };
    // One write at a time, in order, so an older state never lands after a newer one.
    this.writing = this.writing
      .then(() => this.registry.put(snapshot, this.ttlMs))
      .then(
        () => {
          if (this.failing) this.options.logger.info('heartbeat restored');
          this.failing = false;
        },
        (err: unknown) => {
          if (!this.failing) this.options.logger.warn({ err }, 'heartbeat failed; retrying on the next beat');
          this.failing = true;
        },
      );
  }
}
