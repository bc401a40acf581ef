import { UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { JobPayload } from '../shared/job-schema.js';
import type { JobResult } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { LOCK_LOST, toJobFailure, type Processor } from './processor.js';

export type WorkerState = 'starting' | 'ready' | 'busy' | 'draining' | 'stopped';

export interface ConsumerOptions {
  connection: Redis;
  prefix: string;
  /** The queue of this worker's model; default: the default model's (`generate`). */
  queue?: string;
  processor: Processor;
  logger: Logger;
  /** How long a job's lock lives without renewal; BullMQ renews it at half this while the job runs. */
  lockDurationMs?: number;
  /** How often this worker looks for jobs whose worker died (lock lapsed) and requeues them. */
  stalledIntervalMs?: number;
  onStateChange?: (state: WorkerState) => void;
}

/**
 * The BullMQ side of a worker: one job at a time (one GPU, one job), failures mapped to retry or
 * not by their code, graceful close that lets the running job finish.
 */
export class JobConsumer {
  private readonly worker: Worker<JobPayload, JobResult>;
  private state: WorkerState = 'starting';
  private closing: Promise<void> | undefined;
  /** The running job and its lock token (one job at a time). */
  private running: { id: string; token: string } | null = null;
  private readonly lockDurationMs: number;

  constructor(private readonly options: ConsumerOptions) {
    this.lockDurationMs = options.lockDurationMs ?? 30_000;
    this.worker = new Worker<JobPayload, JobResult>(
      options.queue ?? GENERATE_QUEUE,
      async (job, token, signal) => {
        this.setState('busy');
        if (job.id !== undefined && token !== undefined) this.running = { id: job.id, token };
        try {
          return await options.processor(job, signal);
        } catch (err) {
          const failure = toJobFailure(err);
          if (failure.requeue && token !== undefined) {
            // It never started here: back to the queue as it was, its attempts untouched.
            options.logger.warn({ jobId: job.id, err: failure }, 'job put back in the queue untouched');
            await job.moveToWait(token);
            throw new WaitingError();
          }
          options.logger.warn({ jobId: job.id, code: failure.code, retryable: failure.retryable, err: failure }, 'job attempt failed');
          if (!failure.retryable) throw new UnrecoverableError(failure.message);
          throw failure;
        } finally {
          this.running = null;
          if (this.state === 'busy') this.setState('ready');
        }
      },
      {
        connection: options.connection,
        prefix: options.prefix,
        concurrency: 1,
        autorun: false,
        lockDuration: this.lockDurationMs,
        stalledInterval: options.stalledIntervalMs ?? 30_000,
        maxStalledCount: 2,
        // A finished job's completion that met a dropped connection is sent again after this, not
        // BullMQ's 15 s: its lock is no longer renewed meanwhile.
        runRetryDelay: 1000,
      },
    );
    this.worker.on('error', (err) => options.logger.error({ err }, 'queue error'));
    // The lock lapsed (a Redis outage longer than it) and the job may already run elsewhere: stop
    // this run rather than race it; the stalled check gives the job to one worker.
    this.worker.on('lockRenewalFailed', (jobIds) => {
      for (const jobId of jobIds) this.abandon(jobId, 'its lock could not be renewed');
    });
    // After a reconnect, check the running job's lock at once instead of at the next renewal.
    let connectedBefore = false;
    options.connection.on('ready', () => {
      if (connectedBefore) void this.recheckLock();
      connectedBefore = true;
    });
  }

  private abandon(jobId: string, why: string): void {
    if (this.worker.cancelJob(jobId, LOCK_LOST)) {
      this.options.logger.warn({ jobId }, `job lock lost (${why}): stopping this run; the job runs once, elsewhere or here again`);
    }
  }

  private async recheckLock(): Promise<void> {
    const running = this.running;
    if (!running) return;
    try {
      const lost = await this.worker.extendJobLocks([running.id], [running.token], this.lockDurationMs);
      if (lost.includes(running.id) && this.running === running) this.abandon(running.id, 'it lapsed while Redis was away');
    } catch (err) {
      this.options.logger.warn({ err, jobId: running.id }, 'could not check the job lock after a reconnect');
    }
  }

  get currentState(): WorkerState {
    return this.state;
  }

  private setState(state: WorkerState): void {
    if (this.state === state) return;
    this.state = state;
    this.options.onStateChange?.(state);
  }

  /** Starts taking jobs; resolves once the consumer is connected. */
  async start(): Promise<void> {
    void this.worker.run().catch((err: unknown) => this.options.logger.error({ err }, 'worker loop stopped'));
    await this.worker.waitUntilReady();
    this.setState('ready');
  }

  /**
   * Takes no new job until `release()` (the running one goes on): a storage outage. Jobs stay
   * queued with their attempts, for this worker later or for another one now.
   */
  hold(): void {
    if (this.closing) return;
    void this.worker.pause(true).catch((err: unknown) => this.options.logger.error({ err }, 'could not pause the worker'));
  }

  release(): void {
    if (this.closing || !this.worker.isPaused()) return;
    this.worker.resume();
  }

  /** Signal the running job (if it is `jobId`) to stop at its next denoising step. */
  cancel(jobId: string, reason = 'canceled'): boolean {
    return this.worker.cancelJob(jobId, reason);
  }

  /**
   * Stops taking jobs and waits for the running one (drain). `force` abandons it: BullMQ's stalled
   * check then returns it to the queue for another worker. Idempotent.
   */
  close(force = false): Promise<void> {
    if (force) {
      this.setState('draining');
      return this.worker.close(true).finally(() => this.setState('stopped'));
    }
    this.closing ??= (async () => {
      this.setState('draining');
      try {
        await this.worker.close();
      } finally {
        this.setState('stopped');
      }
    })();
    return this.closing;
  }
}
