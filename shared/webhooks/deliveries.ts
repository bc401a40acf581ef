import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import type { JobPayload } from '../job-schema.js';
import { WEBHOOK_DELIVER_JOB, WEBHOOK_QUEUE } from '../queues.js';
import { WEBHOOK_EVENTS, type WebhookEvent } from './events.js';

/**
 * Webhook events, the delivery jobs that carry them through their own queue, and the delivery
 * record `GET /v1/jobs/:id` shows. One event of one job is one message: its delivery job id and
 * its `webhook-id` are derived from (job id, event), so whoever enqueues it — the worker, the API,
 * the notifier's listener or its reconciler — enqueues the same message once, and a receiver
 * sees the same `webhook-id` on every retry.
 */

/** BullMQ job ids may not contain `:`. */
export const deliveryJobId = (jobId: string, event: WebhookEvent) => `${jobId}.${event}`;
export const webhookMessageId = (jobId: string, event: WebhookEvent) => `msg_${jobId.replace(/-/g, '')}_${event}`;

/** What a delivery job carries. `body` is fixed by the first attempt so retries send the same bytes. */
export interface DeliveryJobData {
  jobId: string;
  event: WebhookEvent;
  url: string;
  webhookId: string;
  /** When the event happened (ms); the body's `timestamp`. */
  occurredAt: number;
  /** The job as the event saw it (the worker sends one for `started`); else rendered at the first attempt. */
  snapshot?: unknown;
  /** The API key that made the job: its own secrets sign the message. Absent: WEBHOOK_SECRETS do. */
  owner?: string;
  body?: string;
}

/**
 * pending: queued, not tried yet · retrying: failed, another attempt scheduled · delivered: a 2xx
 * came back · exhausted: every attempt of the schedule failed · gone: the receiver answered 410
 * · refused: the URL's address is not one webhooks may reach.
 */
export type DeliveryState = 'pending' | 'retrying' | 'delivered' | 'exhausted' | 'gone' | 'refused';
export const FINAL_DELIVERY_STATES: readonly DeliveryState[] = ['delivered', 'exhausted', 'gone', 'refused'];

/** One attempt of a delivery, as it went. */
export interface DeliveryAttempt {
  /** When it was made (ms). */
  at: number;
  statusCode: number | null;
  error: string | null;
  /** The delivery's state it left: delivered, retrying, exhausted, gone or refused. */
  state: DeliveryState;
}

/** Attempts a delivery record keeps (the newest); the retry schedule itself allows at most 50 per round. */
export const MAX_ATTEMPT_HISTORY = 100;

/** Settled without reaching the receiver: what POST /v1/jobs/:id/webhooks/redeliver may send again. */
export const REDELIVERABLE_STATES: readonly DeliveryState[] = ['exhausted', 'gone', 'refused'];

export interface DeliveryStatus {
  event: WebhookEvent;
  webhookId: string;
  state: DeliveryState;
  /** Attempts of the current round (a redelivery starts a new one). */
  attempts: number;
  lastStatusCode: number | null;
  lastError: string | null;
  lastAttemptAt: number | null;
  nextAttemptAt: number | null;
  deliveredAt: number | null;
  /** Every attempt so far, every round, oldest first (absent in records from before it was kept). */
  history?: DeliveryAttempt[];
  /** How many times a client asked for it to be sent again. */
  redeliveries?: number;
}

export const deliveriesKey = (prefix: string, jobId: string) => `${prefix}:webhooks:deliveries:${jobId}`;

export async function readDeliveries(redis: Redis, prefix: string, jobId: string): Promise<DeliveryStatus[]> {
  const all = await redis.hgetall(deliveriesKey(prefix, jobId));
  const order = (e: string) => WEBHOOK_EVENTS.indexOf(e as WebhookEvent);
  return Object.entries(all)
    .sort(([a], [b]) => order(a) - order(b))
    .flatMap(([, raw]) => {
      try {
        return [JSON.parse(raw) as DeliveryStatus];
      } catch {
        return [];
      }
    });
}

export async function readDelivery(redis: Redis, prefix: string, jobId: string, event: WebhookEvent): Promise<DeliveryStatus | null> {
  const raw = await redis.hget(deliveriesKey(prefix, jobId), event);
  return raw ? (JSON.parse(raw) as DeliveryStatus) : null;
}

/** Records a delivery's state; `onlyIfAbsent` never overwrites what the notifier already wrote. */
export async function writeDelivery(
  redis: Redis,
  prefix: string,
  jobId: string,
  status: DeliveryStatus,
  ttlS: number,
  onlyIfAbsent = false,
): Promise<void> {
  const key = deliveriesKey(prefix, jobId);
  const value = JSON.stringify(status);
  await redis
    .multi()
    [onlyIfAbsent ? 'hsetnx' : 'hset'](key, status.event, value)
    .expire(key, ttlS)
    .exec();
}

export interface WebhookOutboxOptions {
  connection: Redis;
  prefix: string;
  /** Delay before each attempt (ms), the first included; its length is the number of attempts. */
  scheduleMs: readonly number[];
  /** Finished delivery jobs (and the job records) are kept this long and this many. */
  keepAgeS: number;
  keepCount: number;
}

/** How long a delivery record lives: as long as the job, and at least the whole retry schedule. */
export function deliveryRecordTtlS(keepAgeS: number, scheduleMs: readonly number[]): number {
  const scheduleS = Math.ceil(scheduleMs.reduce((a, b) => a + b, 0) * 1.2 / 1000);
  return keepAgeS + scheduleS + 3600;
}

/** Puts webhook messages on the delivery queue. Safe to call more than once per (job, event). */
export class WebhookOutbox {
  private readonly queue: Queue<DeliveryJobData>;
  private closed = false;

  constructor(private readonly options: WebhookOutboxOptions) {
    this.queue = new Queue<DeliveryJobData>(WEBHOOK_QUEUE, { connection: options.connection, prefix: options.prefix });
    this.queue.on('error', () => undefined);
  }

  /** Enqueues the event when the job asked for it; resolves true when the job has such a webhook. */
  async emit(job: { id: string; payload: JobPayload }, event: WebhookEvent, occurredAt: number, snapshot?: unknown): Promise<boolean> {
    const hook = job.payload.webhook;
    if (!hook || !hook.events.includes(event)) return false;
    const { scheduleMs, keepAgeS, keepCount, prefix, connection } = this.options;
    const webhookId = webhookMessageId(job.id, event);
    const data: DeliveryJobData = { jobId: job.id, event, url: hook.url, webhookId, occurredAt };
    if (snapshot !== undefined) data.snapshot = snapshot;
    if (job.payload.owner !== undefined) data.owner = job.payload.owner;
    const ttlS = deliveryRecordTtlS(keepAgeS, scheduleMs);
    // Job first, record second: a crash between them leaves a job that writes its own record; the
    // reverse could leave a record claiming a delivery nobody will make.
    await this.queue.add(WEBHOOK_DELIVER_JOB, data, {
      jobId: deliveryJobId(job.id, event),
      attempts: scheduleMs.length,
      delay: scheduleMs[0] ?? 0,
      backoff: { type: 'webhook' },
      removeOnComplete: { age: ttlS, count: keepCount },
      removeOnFail: { age: ttlS, count: keepCount },
    });
    await writeDelivery(
      connection,
      prefix,
      job.id,
      {
        event,
        webhookId,
        state: 'pending',
        attempts: 0,
        lastStatusCode: null,
        lastError: null,
        lastAttemptAt: null,
        nextAttemptAt: Date.now() + (scheduleMs[0] ?? 0),
        deliveredAt: null,
      },
      ttlS,
      true,
    );
    return true;
  }

  /**
   * Sends an event whose delivery settled without reaching the receiver (exhausted, gone, refused)
   * again: a new round of the retry schedule, with the same `webhook-id` (receivers deduplicate on
   * it) and, when the message is still stored, the same body. The record goes back to `pending`
   * before the message moves, so the notifier never takes it for settled.
   */
  async redeliver(job: { id: string; payload: JobPayload; finishedAt: number | null }, event: WebhookEvent): Promise<RedeliveryOutcome> {
    const { connection, prefix, scheduleMs, keepAgeS } = this.options;
    const record = await readDelivery(connection, prefix, job.id, event);
    if (!record) return { outcome: 'not_found' };
    if (!REDELIVERABLE_STATES.includes(record.state)) return { outcome: 'not_redeliverable', state: record.state };
    const ttlS = deliveryRecordTtlS(keepAgeS, scheduleMs);
    const pending: DeliveryStatus = { ...record, state: 'pending', attempts: 0, nextAttemptAt: Date.now(), redeliveries: (record.redeliveries ?? 0) + 1 };
    await writeDelivery(connection, prefix, job.id, pending, ttlS);
    try {
      const message = await this.queue.getJob(deliveryJobId(job.id, event));
      const state = message ? await message.getState() : 'unknown';
      if (message && (state === 'failed' || state === 'completed')) {
        await message.retry(state, { resetAttemptsMade: true, resetAttemptsStarted: true });
      } else if (!message || state === 'unknown') {
        // The message aged out of the delivery queue: a new one, its body rendered again.
        await this.emit(job, event, job.finishedAt ?? Date.now());
      }
    } catch (err) {
      await writeDelivery(connection, prefix, job.id, record, ttlS).catch(() => undefined);
      throw err;
    }
    return { outcome: 'redelivering', record: pending };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.close();
  }
}

/** The outbox of a deployment, as its configuration sets it up (API, worker, notifier alike). */
export function webhookOutboxFor(connection: Redis, config: Pick<Config, 'queuePrefix' | 'webhooks' | 'jobs'>): WebhookOutbox {
  return new WebhookOutbox({
    connection,
    prefix: config.queuePrefix,
    scheduleMs: config.webhooks.retryScheduleMs,
    keepAgeS: config.jobs.keepAgeS,
    keepCount: config.jobs.keepCount,
  });
}

export type RedeliveryOutcome =
  | { outcome: 'redelivering'; record: DeliveryStatus }
  | { outcome: 'not_found' }
  | { outcome: 'not_redeliverable'; state: DeliveryState };
