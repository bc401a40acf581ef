import { UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { JobPayload } from '../shared/job-schema.js';
import type { JobResult } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { toJobFailure, type Processor } from './processor.js';

export type WorkerState = 'starting' | 'ready' | 'busy' | 'draining' | 'stopped';

export interface ConsumerOptions {
  connection: Redis;
  prefix: string;
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

  constructor(private readonly options: ConsumerOptions) {
    this.worker = new Worker<JobPayload, JobResult>(
      GENERATE_QUEUE,
      async (job, _token, signal) => {
        this.setState('busy');
        try {
          return await options.processor(job, signal);
        } catch (err) {
          const failure = toJobFailure(err);
          options.logger.warn({ jobId: job.id, code: failure.code, retryable: failure.retryable, err: failure }, 'job attempt failed');
          if (!failure.retryable) throw new UnrecoverableError(failure.message);
          throw failure;
        } finally {
          if (this.state === 'busy') this.setState('ready');
        }
      },
      {
        connection: options.connection,
        prefix: options.prefix,
        concurrency: 1,
        autorun: false,
        lockDuration: options.lockDurationMs ?? 30_000,
        stalledInterval: options.stalledIntervalMs ?? 30_000,
        maxStalledCount: 2,
      },
    );
    this.worker.on('error', (err) => options.logger.error({ err }, 'queue error'));
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
