import { randomUUID } from 'node:crypto';
import { Queue, type Job, type JobsOptions, type QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import { failFastOnRedis } from './errors.js';
import { JobControl } from './job-control.js';
import type { JobPayload } from './job-schema.js';
import { subscribeQueueEvents, type EventSubscription } from './queue-events.js';
import { GENERATE_JOB, GENERATE_QUEUE } from './queues.js';
import { readDeliveries, type DeliveryStatus } from './webhooks/deliveries.js';
import { WorkerRegistry } from './worker-registry.js';

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
  /** Webhook deliveries of this job's events so far (empty without a webhook). */
  deliveries: DeliveryStatus[];
}

/**
 * removed: it was queued and never runs · signaled: it is running and its worker was told to stop
 * · finished: it had already finished · not_found: no such job.
 */
export type CancelOutcome =
  | { outcome: 'removed' | 'signaled' | 'finished'; record: JobRecord }
  | { outcome: 'not_found' };

export type JobListener = (record: JobRecord | null) => void;

export interface JobQueue {
  /** `jobId` lets a caller fix the id beforehand (idempotent submissions). */
  enqueue(payload: JobPayload, options?: { jobId?: string }): Promise<JobRecord>;
  get(id: string): Promise<JobRecord | null>;
  /** Resolves with the job once it is finished, or null when `timeoutMs` passes or `signal` aborts first. */
  waitForFinish(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | null>;
  /**
   * Calls `listener` with the job's record now and after each change (at most about five times a
   * second), until the returned function is called; null once the job is gone.
   */
  watch(id: string, listener: JobListener): () => void;
  /** A queued job is taken off the queue and marked canceled; a running one is told to stop. */
  cancel(id: string, reason?: string): Promise<CancelOutcome>;
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
/** Watched jobs are re-read at most this often: progress reaches clients at ≤ 5 updates a second. */
const WATCH_INTERVAL_MS = 200;
const WATCH_RETRY_MS = 1000;
/** BullMQ's default length cap of a queue's event stream. */
const MAX_EVENTS = 10_000;

export interface BullJobQueueOptions {
  /** Connection for commands: the API's fail-fast one. */
  connection: Redis;
  /**
   * Connection for the shared event subscription (blocking reads, retried forever). Without it
   * the queue can enqueue, read and cancel, but not wait on or watch jobs.
   */
  eventsConnection?: Redis;
  prefix: string;
  jobs: Pick<Config['jobs'], 'attempts' | 'backoffMs' | 'keepAgeS' | 'keepCount'>;
  /**
   * With it, a running job whose worker is no longer in the registry (its heartbeat expired or
   * its autoscaler saw it die) reads `queued`: it waits to be taken again, nobody runs it. A job
   * started less than this long ago is trusted (its worker may not have said so yet).
   */
  workerGraceMs?: number;
}


interface Watch {
  listeners: Set<JobListener>;
  timer: NodeJS.Timeout | undefined;
  /** A read is in flight; `again` asks for another one after it. */
  reading: boolean;
  again: boolean;
  lastReadAt: number;
  status: JobStatus | null;
}

/**
 * Takes a job that is still waiting (or delayed, or prioritized) off the queue and records it as
 * failed with the reason given (`canceled: …`, `model_unavailable: …`), atomically: a worker either got it first (then it is running and must
 * be signaled) or never gets it. Mirrors what BullMQ's own scripts write for a failed job (hash
 * fields, the failed set scored by finish time, a `failed` event) so every reader treats it as one.
 */
const CANCEL_QUEUED_SCRIPT = `
if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
local prev
if redis.call('LREM', KEYS[1], 0, ARGV[1]) > 0 then prev = 'waiting'
elseif redis.call('LREM', KEYS[2], 0, ARGV[1]) > 0 then prev = 'waiting'
elseif redis.call('ZREM', KEYS[3], ARGV[1]) > 0 then prev = 'delayed'
elseif redis.call('ZREM', KEYS[4], ARGV[1]) > 0 then prev = 'prioritized'
else return 0 end
redis.call('HSET', KEYS[5], 'failedReason', ARGV[2], 'finishedOn', ARGV[3])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[4], '*', 'event', 'failed', 'jobId', ARGV[1], 'failedReason', ARGV[2], 'prev', prev)
return 1
`;

export class BullJobQueue implements JobQueue {
  private readonly queue: Queue<JobPayload, JobResult>;
  private readonly subscription: EventSubscription | undefined;
  private readonly control: JobControl;
  private readonly watches = new Map<string, Watch>();
  private readonly registry: WorkerRegistry;
  private closed = false;

  constructor(private readonly options: BullJobQueueOptions) {
    this.queue = new Queue(GENERATE_QUEUE, { connection: options.connection, prefix: options.prefix });
    this.control = new JobControl(options.connection, options.prefix, options.jobs.keepAgeS);
    this.registry = new WorkerRegistry(options.connection, options.prefix);
    this.queue.on('error', () => undefined);
    if (options.eventsConnection) {
      // One subscription per process serves every waiting request and every event stream.
      this.subscription = subscribeQueueEvents(GENERATE_QUEUE, options.eventsConnection, options.prefix);
      const { events } = this.subscription;
      const poke = ({ jobId }: { jobId: string }) => this.poke(jobId);
      for (const name of ['waiting', 'active', 'progress', 'completed', 'failed', 'delayed', 'removed'] as const) {
        events.on(name, poke);
      }
      // A job leaving the wait list moves every queued job behind it up one place.
      const shift = () => {
        for (const [id, watch] of this.watches) if (watch.status === 'queued') this.poke(id);
      };
      events.on('active', shift);
      events.on('failed', shift);
      events.on('removed', shift);
    }
  }

  /** Calls `listener` with the id of each job that finishes (succeeded, failed or canceled for good or for now). */
  onFinished(listener: (jobId: string) => void): () => void {
    const events = this.requireEvents();
    const handler = ({ jobId }: { jobId: string }) => listener(jobId);
    events.on('completed', handler);
    events.on('failed', handler);
    return () => {
      events.off('completed', handler);
      events.off('failed', handler);
    };
  }

  /**
   * Ids of jobs that finished (succeeded, failed, canceled) between `fromMs` and `toMs`, oldest
   * first, a page of at most `limit` from `offset` in each finished set (`more`: another page may
   * follow): BullMQ scores its finished sets by finish time.
   */
  async finishedBetween(fromMs: number, toMs: number, offset: number, limit: number): Promise<{ ids: string[]; more: boolean }> {
    const range = (set: string) => this.options.connection.zrangebyscore(this.queue.toKey(set), fromMs, toMs, 'LIMIT', offset, limit);
    const [completed, failed] = await Promise.all([range('completed'), range('failed')]);
    return { ids: [...completed, ...failed], more: completed.length === limit || failed.length === limit };
  }

  /** Resolves once the event subscription reads the stream. */
  async ready(): Promise<void> {
    await this.requireEvents().waitUntilReady();
  }

  private requireEvents(): QueueEvents {
    if (!this.subscription) throw new Error('BullJobQueue was built without an events connection');
    return this.subscription.events;
  }

  private fast<T>(promise: Promise<T>): Promise<T> {
    return failFastOnRedis(promise, FAST_FAIL_MS);
  }

  async enqueue(payload: JobPayload, options: { jobId?: string } = {}): Promise<JobRecord> {
    const jobId = options.jobId ?? randomUUID();
    const { attempts, backoffMs } = this.options.jobs;
    // Finished jobs stay until the retention sweeper removes them with their images
    // (shared/retention.ts): BullMQ's removeOnComplete would drop the record and orphan the files.
    const opts: JobsOptions = { jobId, attempts, backoff: { type: 'exponential', delay: backoffMs } };
    const job = await this.fast(this.queue.add(GENERATE_JOB, payload, opts));
    return toJobRecord(job, 'waiting', 0, []);
  }

  async get(id: string): Promise<JobRecord | null> {
    return this.fast(
      (async () => {
        // State first: a job finishing between the two reads then shows as running (the next read
        // fixes it), never as failed without its failure reason.
        const state = await this.queue.getJobState(id);
        if (state === 'unknown') return null;
        const job = await this.queue.getJob(id);
        if (!job) return null;
        const position = state === 'waiting' ? await this.waitingPosition(id) : null;
        const deliveries = job.data.webhook ? await readDeliveries(this.options.connection, this.options.prefix, id) : [];
        const held = state === 'active' ? await this.heldByLiveWorker(job) : true;
        return toJobRecord(job, held ? state : 'orphaned', position, deliveries);
      })(),
    );
  }

  async cancel(id: string, reason = 'the job was canceled'): Promise<CancelOutcome> {
    return this.fast(
      (async (): Promise<CancelOutcome> => {
        if (!(await this.queue.getJob(id))) return { outcome: 'not_found' };
        // Marker first: a worker taking the job from now on refuses to run it.
        await this.control.markCanceled(id);
        const removed = await this.failIfQueued(id, encodeFailure('canceled', `${reason} (before it started)`));
        const record = await this.get(id);
        if (!record) return { outcome: 'not_found' };
        if (removed === 1) return { outcome: 'removed', record };
        if (isFinished(record.status)) return { outcome: 'finished', record };
        await this.control.requestAbort(id);
        return { outcome: 'signaled', record };
      })(),
    );
  }

  /** False when no live worker's record names the active job (past the grace period since it started). */
  private async heldByLiveWorker(job: Job<JobPayload, JobResult>): Promise<boolean> {
    const grace = this.options.workerGraceMs;
    if (grace === undefined || Date.now() - (job.processedOn ?? Date.now()) < grace) return true;
    return (await this.registry.list()).some((w) => w.currentJob === job.id);
  }

  /** Fails job `id` with `failedReason` if no worker has taken it: 1 done, 0 it is not queued, -1 no such job. */
  private async failIfQueued(id: string, failedReason: string): Promise<number> {
    const keys = ['wait', 'paused', 'delayed', 'prioritized', id, 'failed', 'events'].map((k) => this.queue.toKey(k));
    return (await this.options.connection.eval(CANCEL_QUEUED_SCRIPT, keys.length, ...keys, id, failedReason, Date.now(), MAX_EVENTS)) as number;
  }

  /**
   * Fails every job no worker has taken yet (waiting, prioritized, delayed) with `code`: what a
   * worker does when the model cannot be loaded, so no client waits on it. Resolves with their ids.
   */
  async failQueued(code: string, message: string): Promise<string[]> {
    const client = this.options.connection;
    const [waiting, paused, prioritized, delayed] = await Promise.all([
      client.lrange(this.queue.toKey('wait'), 0, -1),
      client.lrange(this.queue.toKey('paused'), 0, -1),
      client.zrange(this.queue.toKey('prioritized'), 0, -1),
      client.zrange(this.queue.toKey('delayed'), 0, -1),
    ]);
    const failed: string[] = [];
    for (const id of [...waiting.reverse(), ...paused, ...prioritized, ...delayed]) {
      if ((await this.failIfQueued(id, encodeFailure(code, message))) === 1) failed.push(id);
    }
    return failed;
  }

  /** Position from the consuming end of the wait list (BullMQ pushes left, takes right). */
  private async waitingPosition(id: string): Promise<number | null> {
    const client = await this.queue.client;
    const key = this.queue.toKey('wait');
    const [index, length] = await Promise.all([client.lpos(key, id), client.llen(key)]);
    if (index === null) return null;
    return length - 1 - index;
  }

  async waitForFinish(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | null> {
    await this.requireEvents().waitUntilReady();
    if (signal?.aborted) return null;
    return new Promise<JobRecord | null>((resolve, reject) => {
      let done = false;
      const finish = (value: JobRecord | null, error?: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        stop();
        if (error) reject(error);
        else resolve(value);
      };
      const onAbort = () => finish(null);
      const timer = setTimeout(() => finish(null), timeoutMs);
      signal?.addEventListener('abort', onAbort);
      const stop = this.watch(id, (record) => {
        if (!record) finish(null, new Error(`job ${id} disappeared`));
        else if (isFinished(record.status)) finish(record);
      });
    });
  }

  watch(id: string, listener: JobListener): () => void {
    this.requireEvents();
    let watch = this.watches.get(id);
    if (!watch) {
      watch = { listeners: new Set(), timer: undefined, reading: false, again: false, lastReadAt: 0, status: null };
      this.watches.set(id, watch);
    }
    watch.listeners.add(listener);
    // Subscribed before the first read: a change in between triggers another read, never a miss.
    this.poke(id, true);
    const w = watch;
    return () => {
      w.listeners.delete(listener);
      if (w.listeners.size === 0 && this.watches.get(id) === w) {
        clearTimeout(w.timer);
        this.watches.delete(id);
      }
    };
  }

  /** Schedules a read of a watched job: at once when `now`, else throttled; one read at a time per job. */
  private poke(id: string, now = false): void {
    const watch = this.watches.get(id);
    if (!watch) return;
    if (watch.reading) {
      watch.again = true;
      return;
    }
    if (watch.timer) {
      if (!now) return;
      clearTimeout(watch.timer);
      watch.timer = undefined;
    }
    const wait = now ? 0 : Math.max(0, watch.lastReadAt + WATCH_INTERVAL_MS - Date.now());
    if (wait === 0) void this.read(id, watch);
    else {
      watch.timer = setTimeout(() => {
        watch.timer = undefined;
        void this.read(id, watch);
      }, wait);
    }
  }

  private async read(id: string, watch: Watch): Promise<void> {
    watch.reading = true;
    watch.lastReadAt = Date.now();
    let record: JobRecord | null = null;
    let failed = false;
    try {
      record = await this.get(id);
    } catch {
      failed = true;
    }
    watch.reading = false;
    if (this.watches.get(id) !== watch || this.closed) return;
    if (failed) {
      // Redis is away: try again shortly rather than telling listeners the job is gone.
      watch.timer = setTimeout(() => {
        watch.timer = undefined;
        this.poke(id, true);
      }, WATCH_RETRY_MS);
      return;
    }
    watch.status = record?.status ?? null;
    for (const listener of [...watch.listeners]) listener(record);
    if (watch.again) {
      watch.again = false;
      this.poke(id);
    }
  }

  async ping(): Promise<void> {
    await this.fast(this.options.connection.ping());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const watch of this.watches.values()) clearTimeout(watch.timer);
    this.watches.clear();
    const results = await Promise.allSettled([this.subscription?.close(), this.queue.close()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }
}

/** A BullMQ job in `state` as the service describes it. */
export function toJobRecord(
  job: Job<JobPayload, JobResult>,
  state: string,
  position: number | null,
  deliveries: DeliveryStatus[],
): JobRecord {
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
    deliveries,
  };
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
      // waiting, prioritized, delayed (a retry's backoff), waiting-children, and `orphaned`:
      // active in Redis while its worker is gone, until the queue takes it back.
      return 'queued';
  }
}
