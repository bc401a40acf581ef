import { UnrecoverableError, WaitingError, Worker, type Job, type RedisClient, type WorkerOptions } from 'bullmq';
import type { Span } from 'bullmq';
import type { Redis } from 'ioredis';
import { MAX_STALLED_COUNT } from '../shared/job-recovery.js';
import type { JobPayload } from '../shared/job-schema.js';
import type { JobResult } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { GenerationClock } from './generation-clock.js';
import { GpuGate } from './gpu-gate.js';
import { LOCK_LOST, toJobFailure, type JobStages, type Processor } from './processor.js';

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
  /**
   * Encode and upload a job while the next one generates (default true); false: one job at a
   * time from its start to its upload.
   */
  overlap?: boolean;
  /**
   * With the overlap: how many jobs may be encoded and uploaded at once while the next one
   * generates (default 2): where a job's encode and upload take longer than a generation, one
   * finishing job at a time would leave the GPU waiting for it.
   */
  finishingJobs?: number;
  /**
   * With the overlap: take the next job at most this many ms before the generation in progress is
   * expected to end (learnt from the worker's own generations of the same shape), so that the
   * queue's round trips happen while the GPU still works; 0: never before it ends. Default 20.
   */
  earlyTakeMs?: number;
}

/**
 * A BullMQ worker whose every take of a job first takes the GPU gate: it waits while a job of
 * this process generates, and gives up (takes nothing) once it closes or pauses. A finished job
 * fetches its successor in the same call only when the GPU is free.
 */
class GatedWorker extends Worker<JobPayload, JobResult> {
  constructor(
    queue: string,
    processor: (job: Job<JobPayload, JobResult>, token?: string, signal?: AbortSignal) => Promise<JobResult>,
    options: WorkerOptions,
    private readonly gate: GpuGate,
    /** The worker's command connection (ioredis), for the wake-up marker. */
    private readonly commands: Redis,
    /** BullMQ is done with the job taken under `token`: the queue has its outcome, or sending it was given up. */
    private readonly onSettled: (token: string) => void,
  ) {
    super(queue, processor, options);
  }

  override async processJob(job: Job<JobPayload, JobResult>, token: string, fetchNextCallback?: () => boolean): Promise<void | Job<JobPayload, JobResult>> {
    try {
      return await super.processJob(job, token, fetchNextCallback);
    } finally {
      this.onSettled(token);
    }
  }

  private stopping(): boolean {
    return this.closing !== undefined || this.paused;
  }

  protected override async moveToActive(client: RedisClient, token: string, name?: string): Promise<Job<JobPayload, JobResult>> {
    if (!this.gate.tryTake(token)) {
      // This loop may have been woken for a new job (it took the queue's wake-up marker, BullMQ's
      // "0" member): put one back, so that a worker whose GPU is free takes that job meanwhile.
      await this.commands.zadd(this.keys.marker as string, 0, '0');
      if (!(await this.gate.take(token, () => this.stopping()))) return undefined as unknown as Job<JobPayload, JobResult>;
    }
    try {
      const job = await super.moveToActive(client, token, name);
      if (!job) this.gate.release(token);
      return job;
    } catch (err) {
      this.gate.release(token);
      throw err;
    }
  }

  private gatedFetch(token: string, fetchNext: () => boolean): () => boolean {
    return () => fetchNext() && !this.stopping() && this.gate.tryTake(token);
  }

  /** The job a finish fetched in the same call holds the GPU; none fetched: the GPU is given back. */
  private async holdingFetched<T>(token: string, finish: Promise<T>): Promise<T> {
    try {
      const next = await finish;
      if (!next) this.gate.release(token);
      return next;
    } catch (err) {
      this.gate.release(token);
      throw err;
    }
  }

  protected override handleCompleted(
    result: JobResult,
    job: Job<JobPayload, JobResult>,
    token: string,
    fetchNext: () => boolean = () => true,
    span?: Span,
  ): Promise<Job<JobPayload, JobResult>> {
    return this.holdingFetched(token, super.handleCompleted(result, job, token, this.gatedFetch(token, fetchNext), span));
  }

  protected override handleFailed(
    err: Error,
    job: Job<JobPayload, JobResult>,
    token: string,
    fetchNext: () => boolean = () => true,
    span?: Span,
  ): Promise<Job<JobPayload, JobResult>> {
    return this.holdingFetched(token, super.handleFailed(err, job, token, this.gatedFetch(token, fetchNext), span));
  }

  override close(force = false): Promise<void> {
    const closed = super.close(force);
    this.gate.wake();
    return closed;
  }

  override async pause(doNotWaitActive?: boolean): Promise<void> {
    const paused = super.pause(doNotWaitActive);
    this.gate.wake();
    await paused;
    this.gate.wake();
  }
}

interface RunningEntry {
  id: string;
  token: string;
  worker: GatedWorker;
}

/**
 * The BullMQ side of a worker: one job on the GPU at a time, and the jobs before it encoded and
 * uploaded meanwhile (so the GPU never waits for storage); failures mapped to retry or not by
 * their code; graceful close that lets the running jobs finish.
 *
 * 1 + `finishingJobs` BullMQ workers of concurrency 1 share a GPU gate: each takes a job only once
 * the gate is free and gives it back when that job's generation ends (JobStages.generated), so
 * another loop takes the next job while this one finishes. A job is not taken to wait for the GPU:
 * while one generates, the other loops wait before taking anything (another worker process can
 * take the queued jobs meanwhile), except in the last moments of a generation whose length the
 * worker has learnt (GenerationClock): then one job is taken early and waits for the GPU, at most
 * `GenerationClock.maxWaitMs()` before it goes back to the queue.
 */
export class JobConsumer {
  private readonly workers: GatedWorker[];
  private readonly gate = new GpuGate();
  private readonly clock: GenerationClock;
  private state: WorkerState = 'starting';
  private closing: Promise<void> | undefined;
  /** The jobs this worker holds (at most one generating and `finishingJobs` finishing) and their lock tokens. */
  private readonly running = new Map<string, RunningEntry>();
  /** Per lock token: resolves the job's `JobStages.settled` once BullMQ is done with it. */
  private readonly settling = new Map<string, () => void>();
  private readonly lockDurationMs: number;

  constructor(private readonly options: ConsumerOptions) {
    this.lockDurationMs = options.lockDurationMs ?? 30_000;
    const workerOptions: WorkerOptions = {
      connection: options.connection,
      prefix: options.prefix,
      concurrency: 1,
      autorun: false,
      lockDuration: this.lockDurationMs,
      stalledInterval: options.stalledIntervalMs ?? 30_000,
      maxStalledCount: MAX_STALLED_COUNT,
      // A finished job's completion that met a dropped connection is sent again after this, not
      // BullMQ's 15 s: its lock is no longer renewed meanwhile.
      runRetryDelay: 1000,
    };
    const loops = options.overlap === false ? 1 : 1 + Math.max(1, options.finishingJobs ?? 2);
    this.clock = new GenerationClock(loops > 1 ? (options.earlyTakeMs ?? 20) : 0);
    this.workers = Array.from({ length: loops }, (_, i) => {
      // One stalled-job check per process is enough.
      const worker: GatedWorker = new GatedWorker(
        options.queue ?? GENERATE_QUEUE,
        (job, token, signal) => this.process(worker, job, token, signal),
        i === 0 ? workerOptions : { ...workerOptions, skipStalledCheck: true },
        this.gate,
        options.connection,
        (token) => this.settle(token),
      );
      worker.on('error', (err) => options.logger.error({ err }, 'queue error'));
      // The lock lapsed (a Redis outage longer than it) and the job may already run elsewhere: stop
      // this run rather than race it; the stalled check gives the job to one worker.
      worker.on('lockRenewalFailed', (jobIds) => {
        for (const jobId of jobIds) this.abandon(jobId, 'its lock could not be renewed');
      });
      return worker;
    });
    // After a reconnect, check the running jobs' locks at once instead of at the next renewal.
    let connectedBefore = false;
    options.connection.on('ready', () => {
      if (connectedBefore) void this.recheckLocks();
      connectedBefore = true;
    });
  }

  private async process(worker: GatedWorker, job: Job<JobPayload, JobResult>, token: string | undefined, signal: AbortSignal | undefined): Promise<JobResult> {
    const { options } = this;
    const entry = job.id !== undefined && token !== undefined ? { id: job.id, token, worker } : undefined;
    if (entry) this.running.set(entry.id, entry);
    this.setState('busy');
    const stages = this.stagesOf(token);
    try {
      return await options.processor(job, signal, stages);
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
      stages.generated();
      if (entry && this.running.get(entry.id) === entry) this.running.delete(entry.id);
      if (this.state === 'busy' && this.running.size === 0) this.setState('ready');
    }
  }

  private settle(token: string): void {
    this.settling.get(token)?.();
    this.settling.delete(token);
  }

  /**
   * The job's hold on the GPU: it waits for the GPU when it was taken early, has the end of its
   * generation announced when that end is predictable (the next job is then taken early), and
   * gives the GPU back when its generation ends.
   */
  private stagesOf(token: string | undefined): JobStages {
    const { gate, clock } = this;
    let announce: NodeJS.Timeout | undefined;
    let started: { shape: string; at: number } | undefined;
    const settled = token === undefined ? undefined : new Promise<void>((resolve) => this.settling.set(token, resolve));
    return {
      ...(settled ? { settled } : {}),
      gpu: async (signal) => {
        if (token === undefined) return true;
        const early = gate.takenEarlyAt(token);
        if (early !== undefined) clock.recordTake(performance.now() - early);
        return gate.acquire(token, clock.maxWaitMs(), signal);
      },
      generating: (shape) => {
        if (token === undefined) return;
        started = { shape, at: performance.now() };
        const after = clock.announceAfter(shape);
        if (after !== undefined) announce = setTimeout(() => gate.announceEnd(token), after);
      },
      generated: (ok) => {
        clearTimeout(announce);
        if (ok && started) clock.recordGeneration(started.shape, performance.now() - started.at);
        started = undefined;
        if (token !== undefined) gate.release(token);
      },
    };
  }

  private abandon(jobId: string, why: string): void {
    if (this.workers.some((w) => w.cancelJob(jobId, LOCK_LOST))) {
      this.options.logger.warn({ jobId }, `job lock lost (${why}): stopping this run; the job runs once, elsewhere or here again`);
    }
  }

  private async recheckLocks(): Promise<void> {
    await Promise.all(
      [...this.running.values()].map(async (running) => {
        try {
          const lost = await running.worker.extendJobLocks([running.id], [running.token], this.lockDurationMs);
          if (lost.includes(running.id) && this.running.get(running.id) === running) this.abandon(running.id, 'it lapsed while Redis was away');
        } catch (err) {
          this.options.logger.warn({ err, jobId: running.id }, 'could not check the job lock after a reconnect');
        }
      }),
    );
  }

  /** What every lock token of this worker's starts with (`<owner>:<n>`), one per BullMQ loop. */
  get lockOwners(): string[] {
    return this.workers.map((w) => w.id);
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
    for (const worker of this.workers) void worker.run().catch((err: unknown) => this.options.logger.error({ err }, 'worker loop stopped'));
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
    this.setState('ready');
  }

  /**
   * Takes no new job until `release()` (the running one goes on): a storage outage. Jobs stay
   * queued with their attempts, for this worker later or for another one now.
   */
  hold(): void {
    if (this.closing) return;
    for (const worker of this.workers) void worker.pause(true).catch((err: unknown) => this.options.logger.error({ err }, 'could not pause the worker'));
  }

  release(): void {
    if (this.closing) return;
    for (const worker of this.workers) if (worker.isPaused()) worker.resume();
  }

  /** Signal a running job (if it is `jobId`) to stop: at its next denoising step, or its upload retries. */
  cancel(jobId: string, reason = 'canceled'): boolean {
    return this.workers.some((w) => w.cancelJob(jobId, reason));
  }

  /**
   * Stops taking jobs and waits for the running ones (drain). `force` abandons them: BullMQ's
   * stalled check then returns them to the queue for another worker. Idempotent.
   */
  close(force = false): Promise<void> {
    if (force) {
      this.setState('draining');
      return Promise.all(this.workers.map((w) => w.close(true)))
        .then(() => undefined)
        .finally(() => this.setState('stopped'));
    }
    this.closing ??= (async () => {
      this.setState('draining');
      try {
        await Promise.all(this.workers.map((w) => w.close()));
      } finally {
        this.setState('stopped');
      }
    })();
    return this.closing;
  }
}
