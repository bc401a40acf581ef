import { randomUUID } from 'node:crypto';
import { Queue, type Job, type JobsOptions, type QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from './config.js';
import { failFastOnRedis, ServiceError } from './errors.js';
import { JobControl } from './job-control.js';
import type { FilterVerdict } from './filters.js';
import type { JobPayload } from './job-schema.js';
import { JobWatcher } from './job-watch.js';
import { subscribeQueueEvents, type EventSubscription } from './queue-events.js';
import { CANCEL_QUEUED_SCRIPT, expireDueJobs, expiryKey, MAX_EVENTS } from './queued-jobs.js';
import { GENERATE_JOB, GENERATE_QUEUE } from './queues.js';
import { readDeliveries, type DeliveryStatus } from './webhooks/deliveries.js';
import { WorkerRegistry } from './worker-registry.js';

/**
 * The job queue as the API sees it. The BullMQ details (states, keys, events) stay in this file;
 * handlers work with `JobRecord`s.
 */

/** `expired`: still queued when its `ttl_s` ran out; it never ran. */
export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled' | 'expired';

export const JOB_STATUSES: readonly JobStatus[] = ['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'];

export interface StoredImage {
  key: string;
  width: number;
  height: number;
  seed: number;
  /** The prompt the image was made from (absent in results of workers before filters). */
  prompt?: string;
  /** Each filter's verdict by name. */
  filters?: Record<string, FilterVerdict>;
  /** Tries it took; more than 1 when filters screened out earlier ones. */
  tries?: number;
  /** Every try was screened out: the stored image is black. */
  blocked?: boolean;
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

/** Where a listing stopped: the creation time and id of the last job it looked at. */
export interface ListCursor {
  createdAt: number;
  id: string;
}

export interface ListOptions {
  /** Only jobs in these statuses; empty or absent: all. */
  statuses?: ReadonlySet<JobStatus>;
  /** Continue after this job (newest first). */
  after?: ListCursor | undefined;
  limit: number;
}

export interface JobPage {
  jobs: JobRecord[];
  /** Where the next page starts; null when there is nothing more. */
  next: ListCursor | null;
}

/** An API key has as many queued and running jobs as it may (MAX_QUEUED_JOBS_PER_KEY). */
export class QueuedJobsLimitError extends ServiceError {
  constructor(readonly limit: number) {
    super('queued_jobs_limit', `This API key already has ${limit} queued or running jobs, the most it may; wait for some to finish.`, false);
    this.name = 'QueuedJobsLimitError';
  }
}

export interface JobQueue {
  /** `jobId` lets a caller fix the id beforehand (idempotent submissions). */
  enqueue(payload: JobPayload, options?: { jobId?: string }): Promise<JobRecord>;
  get(id: string): Promise<JobRecord | null>;
  /** Resolves with the job once it is finished, or null when `timeoutMs` passes or `signal` aborts first. */
  waitForFinish(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | null>;
  /**
   * Calls `listener` with the job's record now and after each change (progress at most about five
   * times a second, the job's end at once), until the returned function is called; null once the
   * job is gone.
   */
  watch(id: string, listener: JobListener): () => void;
  /** A queued job is taken off the queue and marked canceled; a running one is told to stop. */
  cancel(id: string, reason?: string): Promise<CancelOutcome>;
  /** The jobs `owner` (undefined: the open service's) submitted, newest first, a page at a time. */
  list(owner: string | undefined, options: ListOptions): Promise<JobPage>;
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
  /**
   * Connection for the shared event subscription (blocking reads, retried forever). Without it
   * the queue can enqueue, read and cancel, but not wait on or watch jobs.
   */
  eventsConnection?: Redis;
  prefix: string;
  jobs: Pick<Config['jobs'], 'attempts' | 'backoffMs' | 'keepAgeS' | 'keepCount'>;
  /** How watched jobs are re-read (tests shorten or stretch these); see JobWatcher. */
  watchTiming?: { throttleMs?: number; safetyPollMs?: number };
  /** Queued plus running jobs one owner (API key) may have; 0 or absent: no limit. Jobs without an owner are not limited. */
  maxQueuedPerOwner?: number;
  /**
   * With it, a running job whose worker is no longer in the registry (its heartbeat expired or
   * its autoscaler saw it die) reads `queued`: it waits to be taken again, nobody runs it. A job
   * started less than this long ago is trusted (its worker may not have said so yet).
   */
  workerGraceMs?: number;
  /**
   * The served models and their queues (one BullMQ queue per model); absent: one model on the
   * `generate` queue. A payload naming no listed model goes to the first (the default) model's queue.
   */
  models?: readonly { name: string; queue: string }[];
}

/**
 * An owner's job index orders jobs by creation time then id, as members of equal score sorted by
 * their text (`<ms, 15 digits>:<id>`): a listing resumes exactly after its cursor, ties included.
 */
const indexMember = (at: ListCursor) => `${String(at.createdAt).padStart(15, '0')}:${at.id}`;
function parseIndexMember(member: string): ListCursor | null {
  const match = /^(\d{15}):(.+)$/.exec(member);
  return match ? { createdAt: Number(match[1]), id: match[2] as string } : null;
}

/**
 * Per-owner bookkeeping, in one step with the check, before the job is added: the owner's index of
 * jobs (newest first, for listing) and, with a limit, its set of unfinished jobs. The set is pruned
 * here of jobs that finished (or vanished, once a reservation is older than a grace period), so
 * the count needs nothing to decrement it when jobs end. Returns 0 when the owner is at its limit.
 * The index forgets entries older than retention plus a week (their jobs are long gone) as it grows.
 * KEYS: index, unfinished · ARGV: job id, now (ms), limit (0 = none), the queue's key prefix, grace
 * (ms), index member, the oldest index member to keep
 */
const RESERVE_SCRIPT = `
local limit = tonumber(ARGV[3])
if limit > 0 then
  local p = ARGV[4]
  local now = tonumber(ARGV[2])
  local members = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local live = 0
  for i = 1, #members, 2 do
    local id = members[i]
    local finished = redis.call('ZSCORE', p .. 'completed', id) or redis.call('ZSCORE', p .. 'failed', id)
    local gone = redis.call('EXISTS', p .. id) == 0 and tonumber(members[i + 1]) < now - tonumber(ARGV[5])
    if finished or gone then redis.call('ZREM', KEYS[2], id) else live = live + 1 end
  end
  if live >= limit then return 0 end
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
redis.call('ZADD', KEYS[1], 0, ARGV[6])
redis.call('ZREMRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[7])
return 1
`;

const RESERVE_COMMAND = 'sdjobsReserveSubmission';

/** Index entries outlive the jobs' retention by this much before the index forgets them. */
const INDEX_SLACK_MS = 7 * 24 * 3600 * 1000;
/** A reservation older than this without its job is one whose enqueue died: it no longer counts. */
const RESERVATION_GRACE_MS = 60_000;
/** Index entries a listing looks at per page, at most (a status filter may need to skip many). */
const LIST_SCAN_BUDGET = 500;

export class BullJobQueue implements JobQueue {
  /** The default model's queue (the first listed). */
  private readonly queue: Queue<JobPayload, JobResult>;
  /** Every model's queue, the default's first. */
  private readonly queues: Queue<JobPayload, JobResult>[];
  private readonly byModel = new Map<string, Queue<JobPayload, JobResult>>();
  private readonly subscriptions: EventSubscription[] = [];
  private readonly control: JobControl;
  private readonly watcher: JobWatcher<JobRecord>;
  private readonly registry: WorkerRegistry;
  private closed = false;

  constructor(private readonly options: BullJobQueueOptions) {
    // Sent by its SHA1 (EVALSHA, the script loaded once), not whole with every submission.
    options.connection.defineCommand(RESERVE_COMMAND, { numberOfKeys: 2, lua: RESERVE_SCRIPT });
    const models = options.models && options.models.length > 0 ? options.models : [{ name: '', queue: GENERATE_QUEUE }];
    const byName = new Map<string, Queue<JobPayload, JobResult>>();
    for (const model of models) {
      let queue = byName.get(model.queue);
      if (!queue) {
        queue = new Queue<JobPayload, JobResult>(model.queue, { connection: options.connection, prefix: options.prefix });
        queue.on('error', () => undefined);
        byName.set(model.queue, queue);
      }
      this.byModel.set(model.name, queue);
    }
    this.queues = [...byName.values()];
    this.queue = this.queues[0] as Queue<JobPayload, JobResult>;
    this.control = new JobControl(options.connection, options.prefix, options.jobs.keepAgeS);
    this.registry = new WorkerRegistry(options.connection, options.prefix);
    this.watcher = new JobWatcher<JobRecord>({ read: (id) => this.get(id), ...options.watchTiming });
    // One subscription per queue and process serves every waiting request and every event stream
    // (BullMQ gives each its own duplicate of the connection).
    for (const queue of options.eventsConnection ? this.queues : []) {
      const subscription = subscribeQueueEvents(queue.name, options.eventsConnection as Redis, options.prefix);
      this.subscriptions.push(subscription);
      const { events } = subscription;
      const changed = ({ jobId }: { jobId: string }) => this.watcher.changed(jobId);
      for (const name of ['waiting', 'active', 'progress', 'delayed'] as const) events.on(name, changed);
      // The end of a job is read at once: a waiting client answers as soon as the job is over.
      const ended = ({ jobId }: { jobId: string }) => this.watcher.ended(jobId);
      for (const name of ['completed', 'failed', 'removed'] as const) events.on(name, ended);
      // A job leaving the wait list moves every queued job behind it up one place.
      const shift = () => this.watcher.queuedChanged();
      events.on('active', shift);
      events.on('failed', shift);
      events.on('removed', shift);
    }
  }

  /** The queue of a payload's model (the default model's for a name not served). */
  private queueOf(model: string): Queue<JobPayload, JobResult> {
    return this.byModel.get(model) ?? this.queue;
  }

  /** The queue holding job `id`: one EXISTS per queue, in one round trip. */
  private async locate(id: string): Promise<Queue<JobPayload, JobResult> | null> {
    if (this.queues.length === 1) return this.queue;
    const pipeline = (await this.connected()).pipeline();
    for (const queue of this.queues) pipeline.exists(queue.toKey(id));
    const replies = (await pipeline.exec()) ?? [];
    const index = replies.findIndex(([err, value]) => !err && Number(value) === 1);
    return index < 0 ? null : (this.queues[index] as Queue<JobPayload, JobResult>);
  }

  /** Calls `listener` with the id of each job that finishes (succeeded, failed or canceled for good or for now). */
  onFinished(listener: (jobId: string) => void): () => void {
    const all = this.requireEvents();
    const handler = ({ jobId }: { jobId: string }) => listener(jobId);
    for (const events of all) {
      events.on('completed', handler);
      events.on('failed', handler);
    }
    return () => {
      for (const events of all) {
        events.off('completed', handler);
        events.off('failed', handler);
      }
    };
  }

  /**
   * Ids of jobs that finished (succeeded, failed, canceled) between `fromMs` and `toMs`, oldest
   * first, a page of at most `limit` from `offset` in each finished set (`more`: another page may
   * follow): BullMQ scores its finished sets by finish time.
   */
  async finishedBetween(fromMs: number, toMs: number, offset: number, limit: number): Promise<{ ids: string[]; more: boolean }> {
    const range = (queue: Queue, set: string) => this.options.connection.zrangebyscore(queue.toKey(set), fromMs, toMs, 'LIMIT', offset, limit);
    const pages = await Promise.all(this.queues.flatMap((queue) => [range(queue, 'completed'), range(queue, 'failed')]));
    return { ids: pages.flat(), more: pages.some((page) => page.length === limit) };
  }

  /** Resolves once the event subscription reads the stream. */
  async ready(): Promise<void> {
    await Promise.all(this.requireEvents().map((events) => events.waitUntilReady()));
  }

  private requireEvents(): QueueEvents[] {
    if (this.subscriptions.length === 0) throw new Error('BullJobQueue was built without an events connection');
    return this.subscriptions.map((s) => s.events);
  }

  private fast<T>(promise: Promise<T>): Promise<T> {
    return failFastOnRedis(promise, FAST_FAIL_MS);
  }

  /** The command connection once it is ready: BullMQ's client resolves then (the API's has no offline queue). */
  private async connected(): Promise<Redis> {
    await this.queue.client;
    return this.options.connection;
  }

  private ownerKeys(owner: string | undefined): [index: string, unfinished: string] {
    const base = `${this.options.prefix}:owners:${owner ?? 'open'}`;
    return [`${base}:jobs`, `${base}:unfinished`];
  }

  async enqueue(payload: JobPayload, options: { jobId?: string } = {}): Promise<JobRecord> {
    const jobId = options.jobId ?? randomUUID();
    const limit = payload.owner === undefined ? 0 : (this.options.maxQueuedPerOwner ?? 0);
    const keys = this.ownerKeys(payload.owner);
    const now = Date.now();
    const member = indexMember({ createdAt: now, id: jobId });
    const client = await this.fast(this.connected());
    const reserved = await this.fast(
      (client as unknown as Record<typeof RESERVE_COMMAND, (...args: (string | number)[]) => Promise<number>>)[RESERVE_COMMAND](
        ...keys,
        jobId,
        now,
        limit,
        this.queueOf(payload.model).toKey(''),
        RESERVATION_GRACE_MS,
        member,
        indexMember({ createdAt: Math.max(0, now - this.options.jobs.keepAgeS * 1000 - INDEX_SLACK_MS), id: '' }),
      ),
    );
    if (reserved === 0) throw new QueuedJobsLimitError(limit);
    try {
      // Expiry first: a job must never be queued without it (the worker refuses an expired one too).
      if (payload.expiresAt !== undefined) await this.fast(client.zadd(expiryKey(this.options.prefix, this.queueOf(payload.model).name), payload.expiresAt, jobId));
      return await this.add(jobId, payload);
    } catch (err) {
      await client.multi().zrem(keys[0], member).zrem(keys[1], jobId).exec().catch(() => undefined);
      throw err;
    }
  }

  private async add(jobId: string, payload: JobPayload): Promise<JobRecord> {
    const { attempts, backoffMs } = this.options.jobs;
    // Finished jobs stay until the retention sweeper removes them with their images
    // (shared/retention.ts): BullMQ's removeOnComplete would drop the record and orphan the files.
    const opts: JobsOptions = { jobId, attempts, backoff: { type: 'exponential', delay: backoffMs } };
    const queue = this.queueOf(payload.model);
    const job = await this.fast(queue.add(GENERATE_JOB, payload, opts));
    // Its real place in its model's line (0 = next); a worker may already have taken it, then it says so.
    const position = await this.fast(this.waitingPosition(queue, jobId));
    if (position !== null) return toJobRecord(job, 'waiting', position, []);
    return (await this.get(jobId)) ?? toJobRecord(job, 'waiting', null, []);
  }

  async get(id: string): Promise<JobRecord | null> {
    const record = await this.readRecord(id);
    // Past its ttl_s and not swept yet: end it now, so nobody ever sees it queued late.
    if (record?.status === 'queued' && record.payload.expiresAt !== undefined && record.payload.expiresAt <= Date.now()) {
      await this.expireDue();
      return this.readRecord(id);
    }
    return record;
  }

  /** Ends the queued jobs whose ttl_s ran out (status `expired`); resolves with their ids. */
  expireDue(): Promise<string[]> {
    return this.fast(
      this.connected().then(async (client) => {
        const expired: string[] = [];
        for (const queue of this.queues) expired.push(...(await expireDueJobs(client, this.options.prefix, queue.toKey(''), Date.now(), queue.name)));
        return expired;
      }),
    );
  }

  private async readRecord(id: string): Promise<JobRecord | null> {
    return this.fast(
      (async () => {
        // State first: a job finishing between the two reads then shows as running (the next read
        // fixes it), never as failed without its failure reason.
        const queue = await this.locate(id);
        if (!queue) return null;
        const state = await queue.getJobState(id);
        if (state === 'unknown') return null;
        const job = await queue.getJob(id);
        if (!job) return null;
        const position = state === 'waiting' ? await this.waitingPosition(queue, id) : null;
        const deliveries = job.data.webhook ? await readDeliveries(this.options.connection, this.options.prefix, id) : [];
        const held = state === 'active' ? await this.heldByLiveWorker(job) : true;
        return toJobRecord(job, held ? state : 'orphaned', position, deliveries);
      })(),
    );
  }

  async cancel(id: string, reason = 'the job was canceled'): Promise<CancelOutcome> {
    return this.fast(
      (async (): Promise<CancelOutcome> => {
        const queue = await this.locate(id);
        if (!queue || !(await queue.getJob(id))) return { outcome: 'not_found' };
        // Marker first: a worker taking the job from now on refuses to run it.
        await this.control.markCanceled(id);
        const removed = await this.failIfQueued(queue, id, encodeFailure('canceled', `${reason} (before it started)`));
        const record = await this.get(id);
        if (!record) return { outcome: 'not_found' };
        if (removed === 1) return { outcome: 'removed', record };
        if (isFinished(record.status)) return { outcome: 'finished', record };
        await this.control.requestAbort(id);
        return { outcome: 'signaled', record };
      })(),
    );
  }

  async list(owner: string | undefined, options: ListOptions): Promise<JobPage> {
    const [index] = this.ownerKeys(owner);
    const connection = await this.fast(this.connected());
    const wanted = options.statuses && options.statuses.size > 0 ? options.statuses : null;
    const jobs: JobRecord[] = [];
    let upper = options.after ? `(${indexMember(options.after)}` : '+';
    let scanned = 0;
    for (;;) {
      const batch = await this.fast(connection.zrevrangebylex(index, upper, '-', 'LIMIT', 0, 100));
      if (batch.length === 0) return { jobs, next: null };
      for (const member of batch) {
        scanned += 1;
        upper = `(${member}`;
        const at = parseIndexMember(member);
        const record = at ? await this.get(at.id) : null;
        // Gone by retention (or unreadable): drop it from the index too.
        if (!record) await connection.zrem(index, member).catch(() => undefined);
        else if (!wanted || wanted.has(record.status)) jobs.push(record);
        if (at && (jobs.length >= options.limit || scanned >= LIST_SCAN_BUDGET)) {
          const more = await this.fast(connection.zrevrangebylex(index, upper, '-', 'LIMIT', 0, 1));
          return { jobs, next: more.length > 0 ? at : null };
        }
      }
    }
  }

  /** False when no live worker's record names the active job (past the grace period since it started). */
  private async heldByLiveWorker(job: Job<JobPayload, JobResult>): Promise<boolean> {
    const grace = this.options.workerGraceMs;
    if (grace === undefined || Date.now() - (job.processedOn ?? Date.now()) < grace) return true;
    return (await this.registry.list()).some((w) => w.currentJob === job.id || (w.heldJobs ?? []).some((h) => h.id === job.id));
  }

  /** Fails job `id` with `failedReason` if no worker has taken it: 1 done, 0 it is not queued, -1 no such job. */
  private async failIfQueued(queue: Queue, id: string, failedReason: string): Promise<number> {
    return (await this.options.connection.eval(CANCEL_QUEUED_SCRIPT, 0, queue.toKey(''), id, failedReason, Date.now(), MAX_EVENTS)) as number;
  }

  /**
   * Fails every job no worker has taken yet (waiting, prioritized, delayed) with `code`: what a
   * worker does when the model cannot be loaded, so no client waits on it. Resolves with their ids.
   */
  async failQueued(code: string, message: string): Promise<string[]> {
    const client = this.options.connection;
    const failed: string[] = [];
    for (const queue of this.queues) {
      const [waiting, paused, prioritized, delayed] = await Promise.all([
        client.lrange(queue.toKey('wait'), 0, -1),
        client.lrange(queue.toKey('paused'), 0, -1),
        client.zrange(queue.toKey('prioritized'), 0, -1),
        client.zrange(queue.toKey('delayed'), 0, -1),
      ]);
      for (const id of [...waiting.reverse(), ...paused, ...prioritized, ...delayed]) {
        if ((await this.failIfQueued(queue, id, encodeFailure(code, message))) === 1) failed.push(id);
      }
    }
    return failed;
  }

  /** Position from the consuming end of the model's wait list (BullMQ pushes left, takes right). */
  private async waitingPosition(queue: Queue, id: string): Promise<number | null> {
    const client = await queue.client;
    const key = queue.toKey('wait');
    const [index, length] = await Promise.all([client.lpos(key, id), client.llen(key)]);
    if (index === null) return null;
    return length - 1 - index;
  }

  async waitForFinish(id: string, timeoutMs: number, signal?: AbortSignal): Promise<JobRecord | null> {
    await this.ready();
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
    return this.watcher.watch(id, listener);
  }

  async ping(): Promise<void> {
    await this.fast(this.options.connection.ping());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    const results = await Promise.allSettled([...this.subscriptions.map((s) => s.close()), ...this.queues.map((q) => q.close())]);
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

export const isFinished = (status: JobStatus) =>
  status === 'succeeded' || status === 'failed' || status === 'canceled' || status === 'expired';

function toStatus(state: string, failureCode: string | undefined): JobStatus {
  switch (state) {
    case 'active':
      return 'running';
    case 'completed':
      return 'succeeded';
    case 'failed':
      return failureCode === 'canceled' ? 'canceled' : failureCode === 'expired' ? 'expired' : 'failed';
    default:
      // waiting, prioritized, delayed (a retry's backoff), waiting-children, and `orphaned`:
      // active in Redis while its worker is gone, until the queue takes it back.
      return 'queued';
  }
}
