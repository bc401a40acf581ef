import { Queue, type QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { decodeFailure, type JobResult } from './job-queue.js';
import type { JobPayload } from './job-schema.js';
import { subscribeQueueEvents, type EventSubscription } from './queue-events.js';
import { GENERATE_QUEUE } from './queues.js';
import { closeRedis } from './redis.js';

/**
 * The operator's view of the queues: counts by BullMQ state at any moment, and one event per job
 * that reaches a final state (read from the queue's event stream, so the API sees every worker's
 * jobs). Metrics and the admin dashboard are built on it; request handlers never need it.
 */

export type JobOutcome = 'succeeded' | 'failed' | 'canceled' | 'expired';

export interface FinishedJob {
  id: string;
  outcome: JobOutcome;
  /** The failure's stable code; null when the job succeeded. */
  errorCode: string | null;
  model: string | null;
  steps: number | null;
  /** Images stored; 0 unless succeeded. */
  images: number;
  workerId: string | null;
  /** Null (with the other timestamps) when the job could not be read back. */
  createdAt: number | null;
  /** Start of the last attempt; null when the job never ran (canceled while queued). */
  startedAt: number | null;
  finishedAt: number | null;
  /** The worker's stage timings (`unet`, `vae`, `total`, …) when it succeeded. */
  timingsMs: Record<string, number> | null;
}

export type FinishedListener = (job: FinishedJob) => void;

/** A webhook delivery that ended: `delivered`, or why it stopped (`exhausted`, `gone`, `refused`, …). */
export type DeliveryListener = (outcome: string) => void;

export interface QueueMonitor {
  /** Jobs in each BullMQ state (waiting, active, delayed, prioritized, completed, failed, …). */
  counts(): Promise<Record<string, number>>;
  /** Calls `listener` once per job that finishes; returns the unsubscribe function. */
  onJobFinished(listener: FinishedListener): () => void;
  /** Calls `listener` once per webhook delivery that ends (delivered or given up); returns the unsubscribe function. */
  onWebhookFinished(listener: DeliveryListener): () => void;
  /** The BullMQ queues themselves, for the admin dashboard (Bull Board). */
  readonly queues: readonly Queue[];
  close(): Promise<void>;
}

export const JOB_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed', 'paused', 'waiting-children'] as const;

export interface BullQueueMonitorOptions {
  /** Fail-fast connection for commands (counts, job reads). */
  connection: Redis;
  /** Makes a connection for each blocking event-stream reader; the monitor closes them. */
  createEventsConnection: () => Redis;
  prefix: string;
  /** The notifier's delivery queue: on the dashboard, and its outcomes reported to `onWebhookFinished`. */
  webhookQueue?: string;
  /** The models' queues (default: `generate` alone); counts and job outcomes cover them all. */
  generateQueues?: readonly string[];
  /** Reports a job that finished but could not be read back (already removed, Redis blip). */
  onError?: (err: unknown, jobId: string) => void;
}

export class BullQueueMonitor implements QueueMonitor {
  readonly queues: readonly Queue[];
  private readonly generate: Queue<JobPayload, JobResult>[];
  private readonly subscriptions: { subscription: EventSubscription; connection: Redis }[] = [];
  private readonly listeners = new Set<FinishedListener>();
  private readonly deliveryListeners = new Set<DeliveryListener>();
  private subscribedJobs = false;
  private subscribedDeliveries = false;
  private closed = false;

  constructor(private readonly options: BullQueueMonitorOptions) {
    const names = options.generateQueues && options.generateQueues.length > 0 ? [...new Set(options.generateQueues)] : [GENERATE_QUEUE];
    this.generate = names.map((name) => new Queue<JobPayload, JobResult>(name, { connection: options.connection, prefix: options.prefix }));
    const extra = options.webhookQueue ? [new Queue(options.webhookQueue, { connection: options.connection, prefix: options.prefix })] : [];
    this.queues = [...this.generate, ...extra];
    for (const queue of this.queues) queue.on('error', () => undefined);
  }

  async counts(): Promise<Record<string, number>> {
    const all = await Promise.all(this.generate.map((q) => q.getJobCounts(...JOB_STATES)));
    const total: Record<string, number> = {};
    for (const counts of all) for (const [state, n] of Object.entries(counts)) total[state] = (total[state] ?? 0) + n;
    return total;
  }

  /** Jobs in each BullMQ state, by queue name. */
  async countsByQueue(): Promise<Map<string, Record<string, number>>> {
    return new Map(await Promise.all(this.generate.map(async (q) => [q.name, await q.getJobCounts(...JOB_STATES)] as const)));
  }

  onJobFinished(listener: FinishedListener): () => void {
    this.listeners.add(listener);
    if (!this.subscribedJobs && !this.closed) {
      this.subscribedJobs = true;
      for (const queue of this.generate) {
        const events = this.subscribe(queue.name);
        events.on('completed', ({ jobId }) => void this.report(queue, jobId, 'completed'));
        // 'failed' comes once, when the job is finally failed; a retried attempt goes back to waiting/delayed.
        events.on('failed', ({ jobId, failedReason }) => void this.report(queue, jobId, 'failed', failedReason));
      }
    }
    return () => this.listeners.delete(listener);
  }

  onWebhookFinished(listener: DeliveryListener): () => void {
    this.deliveryListeners.add(listener);
    const queue = this.options.webhookQueue;
    if (queue && !this.subscribedDeliveries && !this.closed) {
      this.subscribedDeliveries = true;
      const events = this.subscribe(queue);
      const emit = (outcome: string) => {
        for (const fn of this.deliveryListeners) fn(outcome);
      };
      events.on('completed', () => emit('delivered'));
      events.on('failed', ({ failedReason }) => emit(deliveryFailure(failedReason)));
    }
    return () => this.deliveryListeners.delete(listener);
  }

  /** Subscriptions start with their first listener: an API without metrics holds no blocking connection. */
  private subscribe(queue: string): QueueEvents {
    const connection = this.options.createEventsConnection();
    connection.on('error', () => undefined);
    const subscription = subscribeQueueEvents(queue, connection, this.options.prefix);
    this.subscriptions.push({ subscription, connection });
    return subscription.events;
  }

  private async report(queue: Queue<JobPayload, JobResult>, jobId: string, state: 'completed' | 'failed', failedReason?: string): Promise<void> {
    try {
      // Already removed (retention of 0) or unreadable: the outcome still counts, without timings.
      const job = await queue.getJob(jobId).catch((err: unknown) => {
        this.options.onError?.(err, jobId);
        return undefined;
      });
      const failure = state === 'failed' ? decodeFailure(job?.failedReason ?? failedReason) : null;
      const result = state === 'completed' ? ((job?.returnvalue as JobResult | undefined) ?? null) : null;
      const finished: FinishedJob = {
        id: jobId,
        outcome: failure ? (failure.code === 'canceled' || failure.code === 'expired' ? failure.code : 'failed') : 'succeeded',
        errorCode: failure?.code ?? null,
        model: typeof job?.data?.model === 'string' ? job.data.model : null,
        steps: typeof job?.data?.numInferenceSteps === 'number' ? job.data.numInferenceSteps : null,
        images: result?.images?.length ?? 0,
        workerId: result?.workerId ?? null,
        createdAt: job?.timestamp ?? null,
        startedAt: job?.processedOn ?? null,
        finishedAt: job?.finishedOn ?? null,
        timingsMs: result?.timingsMs ?? null,
      };
      for (const listener of this.listeners) listener(finished);
    } catch (err) {
      this.options.onError?.(err, jobId);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([
      ...this.subscriptions.map(async ({ subscription, connection }) => {
        await subscription.close();
        await closeRedis(connection);
      }),
      ...this.queues.map((q) => q.close()),
    ]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }
}

/** A failed delivery job's reason as an outcome label: its code when it has one (`gone: …`), else `exhausted`. */
export function deliveryFailure(reason: string | undefined): string {
  const { code } = decodeFailure(reason);
  return code === 'internal_error' ? 'exhausted' : code;
}
