import { randomUUID } from 'node:crypto';
import { Queue, QueueEvents, type Job, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import { QueueUnavailableError, withDeadline } from './errors.js';
import type { JobPayload } from './job-schema.js';
import { GENERATE_JOB, GENERATE_QUEUE } from './queues.js';

/**
 * The job queue as the API sees it. The BullMQ details (states, keys, events) stay in this file;
 * handlers work with `JobRecord`s.
 */

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';

export interface StoredImage {
  key: string;
  width: number;
  height: number;
  seed: number;
}

/** What a worker returns for a succeeded job (BullMQ's return value). */
export interface JobResult {
  images: StoredImage[];
  seed: number;
  workerId: string;
  timingsMs: Record<string, number>;
}

export interface JobRecord {
  id: string;
  status: JobStatus;
  payload: JobPayload;
  progress: { step: number; total: number } | null;
  /** 0 = next to run; null unless queued. */
  queuePosition: number | null;
  attemptsMade: number;
  maxAttempts: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  result: JobResult | null;
  error: { code: string; message: string } | null;
}

export interface JobQueue {
  enqueue(payload: JobPayload): Promise<JobRecord>;
  get(id: string): Promise<JobRecord | null>;
  /** Resolves with the job once it is finished, or null when `timeoutMs` passes first. */
  waitForFinish(id: string, timeoutMs: number): Promise<JobRecord | null>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Failed jobs carry `<code>: <message>` as BullMQ's failedReason (see worker's error mapping), so
 * the stable code survives the trip through Redis.
 */
export function encodeFailure(code: string, message: string): string {
  return `${code}: ${message}`;
}

export function decodeFailure(reason: string | undefined): { code: string; message: string } {
  const match = /^([a-z][a-z0-9_]*): ([\s\S]*)$/.exec(reason ?? '');
  if (match) return { code: match[1] as string, message: match[2] as string };
  return { code: 'internal_error', message: reason || 'the job failed' };
}

const FAST_FAIL_MS = 1000;

export interface BullJobQueueOptions {
  /** Connection for commands: the API's fail-fast one. */
  connection: Redis;
  /** Connection for the shared event subscription (blocking reads, retried forever). */
  eventsConnection: Redis;
  prefix: string;
  jobs: Config['jobs'];
}

export class BullJobQueue implements JobQueue {
  private readonly queue: Queue<JobPayload, JobResult>;
  private readonly events: QueueEvents;
  private readonly waiters = new Map<string, Set<() => void>>();
  private closed = false;

  constructor(private readonly options: BullJobQueueOptions) {
    this.queue = new Queue(GENERATE_QUEUE, { connection: options.connection, prefix: options.prefix });
    // One subscription per process serves every waiting request.
    this.events = new QueueEvents(GENERATE_QUEUE, { connection: options.eventsConnection, prefix: options.prefix });
    const wake = ({ jobId }: { jobId: string }) => {
      for (const fn of this.waiters.get(jobId) ?? []) fn();
    };
    this.events.on('completed', wake);
    this.events.on('failed', wake);
    this.queue.on('error', () => undefined);
    this.events.on('error', () => undefined);
  }

  private fast<T>(promise: Promise<T>): Promise<T> {
    return withDeadline(promise, FAST_FAIL_MS, () => new QueueUnavailableError()).catch((err: unknown) => {
      if (err instanceof QueueUnavailableError) throw err;
      // ioredis refuses commands at once while disconnected (no offline queue).
      if (err instanceof Error && /Connection is closed|Stream isn't writeable|ECONNREFUSED|max retries|enableOfflineQueue/i.test(err.message)) {
        throw new QueueUnavailableError();
      }
      throw err;
    });
  }

  async enqueue(payload: JobPayload): Promise<JobRecord> {
    const jobId = randomUUID();
    const { attempts, backoffMs, keepAgeS, keepCount } = this.options.jobs;
    const opts: JobsOptions = {
      jobId,
      attempts,
      backoff: { type: 'exponential', delay: backoffMs },
      removeOnComplete: { age: keepAgeS, count: keepCount },
      removeOnFail: { age: keepAgeS, count: keepCount },
    };
    const job = await this.fast(this.queue.add(GENERATE_JOB, payload, opts));
    return this.toRecord(job, 'waiting', 0);
  }

  async get(id: string): Promise<JobRecord | null> {
    return this.fast(
      (async () => {
        const job = await this.queue.getJob(id);
        if (!job) return null;
        const state = await job.getState();
        const position = state === 'waiting' ? await this.waitingPosition(id) : null;
        return this.toRecord(job, state, position);
      })(),
    );
  }

  /** Position from the consuming end of the wait list (BullMQ pushes left, takes right). */
  private async waitingPosition(id: string): Promise<number | null> {
    const client = await this.queue.client;
    const key = this.queue.toKey('wait');
    const [index, length] = await Promise.all([client.lpos(key, id), client.llen(key)]);
    if (index === null) return null;
    return length - 1 - index;
  }

  async waitForFinish(id: string, timeoutMs: number): Promise<JobRecord | null> {
    await this.events.waitUntilReady();
    return new Promise<JobRecord | null>((resolve, reject) => {
      let done = false;
      const finish = (value: JobRecord | null, error?: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        const set = this.waiters.get(id);
        set?.delete(check);
        if (set && set.size === 0) this.waiters.delete(id);
        if (error) reject(error);
        else resolve(value);
      };
      const check = () => {
        this.get(id).then(
          (record) => {
            if (!record) finish(null, new Error(`job ${id} disappeared`));
            else if (isFinished(record.status)) finish(record);
          },
          (err: unknown) => finish(null, err),
        );
      };
      const timer = setTimeout(() => finish(null), timeoutMs);
      const set = this.waiters.get(id) ?? new Set();
      set.add(check);
      this.waiters.set(id, set);
      // The job may have finished before the subscription saw it.
      check();
    });
  }

  async ping(): Promise<void> {
    await this.fast(this.options.connection.ping());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([this.events.close(), this.queue.close()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  private toRecord(job: Job<JobPayload, JobResult>, state: string, position: number | null): JobRecord {
    const progress = job.progress as { step?: number; total?: number } | number | undefined;
    const failure = state === 'failed' ? decodeFailure(job.failedReason) : null;
    return {
      id: job.id as string,
      status: toStatus(state, failure?.code),
      payload: job.data,
      progress:
        progress && typeof progress === 'object' && typeof progress.step === 'number' && typeof progress.total === 'number'
          ? { step: progress.step, total: progress.total }
          : null,
      queuePosition: position,
      attemptsMade: job.attemptsMade,
      maxAttempts: job.opts.attempts ?? 1,
      createdAt: job.timestamp,
      startedAt: job.processedOn ?? null,
      finishedAt: state === 'completed' || state === 'failed' ? (job.finishedOn ?? null) : null,
      result: state === 'completed' ? (job.returnvalue ?? null) : null,
      error: failure,
    };
  }
}

export const isFinished = (status: JobStatus) => status === 'succeeded' || status === 'failed' || status === 'canceled';

function toStatus(state: string, failureCode: string | undefined): JobStatus {
  switch (state) {
    case 'active':
      return 'running';
    case 'completed':
      return 'succeeded';
    case 'failed':
      return failureCode === 'canceled' ? 'canceled' : 'failed';
    default:
      // waiting, prioritized, delayed (a retry's backoff), waiting-children
      return 'queued';
  }
}
