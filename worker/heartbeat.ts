import os from 'node:os';
import type { Redis } from 'ioredis';
import { withDeadline } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { WorkerRegistry, type WorkerRecord } from '../shared/worker-registry.js';
import type { WorkerState } from './consumer.js';
import type { JobStages } from './processor.js';

interface HeldJob {
  id: string | null;
  token: string | null;
  /** Still on the GPU (or before it); false once its images are being encoded and uploaded. */
  generating: boolean;
}

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
  private readonly held = new Set<HeldJob>();

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
      heldJobs: [],
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

  /**
   * Names the lock owners of the worker's BullMQ loops (`JobConsumer.lockOwners`); resolves once
   * that record was written (or failed to be), so it lands before the worker takes a job.
   */
  setLockOwners(owners: readonly string[]): Promise<void> {
    this.record.lockOwners = [...owners];
    this.beat();
    return this.writing;
  }

  /** Why the worker takes no jobs for now (storage failing), or null again. */
  setPaused(reason: string | null): void {
    this.record.paused = reason;
    this.beat();
  }

  /**
   * Wraps the job processor so the record names the jobs this worker holds (the generating one
   * as `currentJob`, every one in `heldJobs` with its lock token) and counts finished ones.
   */
  track<J extends { id?: string | undefined; token?: string | undefined }, R>(
    fn: (job: J, signal?: AbortSignal, stages?: JobStages) => Promise<R>,
  ): (job: J, signal?: AbortSignal, stages?: JobStages) => Promise<R> {
    return async (job, signal, stages) => {
      const held: HeldJob = { id: job.id ?? null, token: job.token ?? null, generating: true };
      this.held.add(held);
      this.showHeld();
      // The job loop's stages as they are, with the end of the generation seen here too.
      const tracked: JobStages = {
        ...stages,
        generated: (ok?: boolean) => {
          stages?.generated(ok);
          if (!held.generating) return;
          held.generating = false;
          this.showHeld();
        },
      };
      try {
        const result = await fn(job, signal, tracked);
        this.record.jobsDone += 1;
        return result;
      } catch (err) {
        this.record.jobsFailed += 1;
        throw err;
      } finally {
        // Named until the queue has its outcome: a kill between the return and the completion
        // leaves the job active under this worker's lock, and the record is what puts it back.
        const drop = () => {
          this.held.delete(held);
          this.showHeld();
        };
        if (stages?.settled) void stages.settled.then(drop);
        else drop();
      }
    };
  }

  private showHeld(): void {
    // The generating job first: it is the worker's current job; the one still uploading follows.
    const jobs = [...this.held].sort((a, b) => Number(b.generating) - Number(a.generating)).filter((h) => h.id !== null);
    this.record.currentJob = jobs[0]?.id ?? null;
    this.record.currentJobToken = jobs[0]?.token ?? null;
    this.record.heldJobs = jobs.map((h) => ({ id: h.id as string, token: h.token }));
    this.beat();
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
