import { UnrecoverableError, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { encodeFailure, type JobRecord } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import type { JobView } from '../shared/job-view.js';
import {
  FINAL_DELIVERY_STATES,
  readDelivery,
  writeDelivery,
  MAX_ATTEMPT_HISTORY,
  type DeliveryAttempt,
  type DeliveryJobData,
  type DeliveryStatus,
} from '../shared/webhooks/deliveries.js';
import { withJitter } from '../shared/webhooks/schedule.js';
import { signedHeaders } from '../shared/webhooks/signing.js';
import type { AttemptResult } from './http-delivery.js';

/**
 * One attempt of one webhook message, as a BullMQ processor: render the body once (later attempts
 * send the same bytes), sign it for this attempt's timestamp, POST it, record the outcome where
 * `GET /v1/jobs/:id` shows it, and tell BullMQ whether and when to try again.
 */

/** Thrown for a failed attempt that will be retried; the backoff strategy reads `delayMs`. */
export class RetryLater extends Error {
  constructor(
    message: string,
    readonly delayMs: number,
  ) {
    super(message);
    this.name = 'RetryLater';
  }
}

export interface DeliveryProcessorDeps {
  /** Reads the job an event is about (for the body, when the event carries no snapshot). */
  jobs: { get(id: string): Promise<JobRecord | null> };
  render: (record: JobRecord) => JobView;
  redis: Redis;
  prefix: string;
  /** The secrets that sign a message: its job's API key's own, or WEBHOOK_SECRETS for a job without one. */
  secretsFor: (data: DeliveryJobData) => Promise<readonly string[]>;
  scheduleMs: readonly number[];
  recordTtlS: number;
  post: (url: string, body: string, headers: Record<string, string>) => Promise<AttemptResult>;
  logger: Logger;
  random?: () => number;
}

/** The delay before attempt `attemptsMade + 1` (1-based), jittered; the last entry repeats past the end. */
export function scheduledDelay(scheduleMs: readonly number[], attemptsMade: number, random = Math.random): number {
  const delay = scheduleMs[Math.min(attemptsMade, scheduleMs.length - 1)] ?? 0;
  return withJitter(delay, random);
}

/** BullMQ's custom backoff: the delay the processor chose (schedule or Retry-After). */
export function deliveryBackoff(scheduleMs: readonly number[]) {
  return (attemptsMade: number, _type?: string, err?: Error): number =>
    err instanceof RetryLater ? err.delayMs : scheduledDelay(scheduleMs, attemptsMade);
}

export function createDeliveryProcessor(deps: DeliveryProcessorDeps) {
  return async (job: Job<DeliveryJobData>): Promise<{ statusCode: number }> => {
    const data = job.data;
    const log = deps.logger.child({ jobId: data.jobId, event: data.event, webhookId: data.webhookId });
    const previous = await readDelivery(deps.redis, deps.prefix, data.jobId, data.event);
    if (previous && FINAL_DELIVERY_STATES.includes(previous.state)) {
      // A second enqueue of a message already settled (the outbox is at-least-once).
      log.debug({ state: previous.state }, 'delivery already settled');
      return { statusCode: previous.lastStatusCode ?? 0 };
    }

    const attempt = job.attemptsMade + 1;
    const maxAttempts = job.opts.attempts ?? deps.scheduleMs.length;
    const now = Date.now();
    const result = await attemptOnce();

    if (result.ok) {
      await saveState({ state: 'delivered', attempts: attempt, lastStatusCode: result.statusCode, lastAttemptAt: now, deliveredAt: Date.now() });
      log.info({ attempt, statusCode: result.statusCode }, 'webhook delivered');
      return { statusCode: result.statusCode };
    }
    const failure = { attempts: attempt, lastStatusCode: result.statusCode, lastError: result.error, lastAttemptAt: now };
    if (result.permanent) {
      await saveState({ state: result.permanent, ...failure });
      log.warn({ attempt, statusCode: result.statusCode, error: result.error }, `webhook not delivered: ${result.permanent}`);
      throw new UnrecoverableError(encodeFailure(result.permanent, result.error));
    }
    if (attempt >= maxAttempts) {
      await saveState({ state: 'exhausted', ...failure });
      log.warn({ attempt, statusCode: result.statusCode, error: result.error }, 'webhook not delivered: retries exhausted');
      throw new UnrecoverableError(encodeFailure('exhausted', `${attempt} attempts failed; the last: ${result.error}`));
    }
    const delayMs = result.retryAfterMs ?? scheduledDelay(deps.scheduleMs, attempt, deps.random);
    await saveState({ state: 'retrying', ...failure, nextAttemptAt: Date.now() + delayMs });
    log.info({ attempt, statusCode: result.statusCode, error: result.error, retryInMs: delayMs }, 'webhook attempt failed; will retry');
    throw new RetryLater(result.error, delayMs);

    async function attemptOnce(): Promise<AttemptResult> {
      const failed = (error: string, permanent: 'exhausted' | null = null): AttemptResult => ({
        ok: false,
        statusCode: null,
        error,
        retryAfterMs: null,
        permanent,
      });
      let secrets: readonly string[];
      try {
        secrets = await deps.secretsFor(data);
      } catch (err) {
        return failed(`could not read the signing secrets: ${(err as Error).message}`);
      }
      if (secrets.length === 0) {
        return failed(data.owner === undefined ? 'the notifier has no WEBHOOK_SECRETS to sign with' : "the job's API key has no live webhook secret to sign with");
      }
      let body: string | null;
      try {
        body = data.body ?? (await renderBody());
      } catch (err) {
        // Redis hiccup while reading the job: a failed attempt, recorded and retried like one.
        return failed(`could not read the job: ${(err as Error).message}`);
      }
      if (body === null) return failed('the job is no longer stored', 'exhausted');
      return deps.post(data.url, body, { ...signedHeaders(secrets, data.webhookId, body, now) });
    }

    /** The body of this message, fixed at the first attempt; null when the job is gone. */
    async function renderBody(): Promise<string | null> {
      let snapshot = data.snapshot;
      if (snapshot === undefined) {
        const record = await deps.jobs.get(data.jobId);
        if (!record) return null;
        snapshot = deps.render(record);
      }
      const body = JSON.stringify({ type: `job.${data.event}`, timestamp: new Date(data.occurredAt).toISOString(), data: snapshot });
      const { snapshot: _dropped, ...rest } = data;
      await job.updateData({ ...rest, body });
      return body;
    }

    /** Records the outcome of this attempt (each call is one attempt), its line in the history included. */
    async function saveState(patch: Partial<DeliveryStatus> & Pick<DeliveryStatus, 'state'>): Promise<void> {
      const line: DeliveryAttempt = { at: now, statusCode: patch.lastStatusCode ?? null, error: patch.lastError ?? null, state: patch.state };
      const status: DeliveryStatus = {
        event: data.event,
        webhookId: data.webhookId,
        attempts: previous?.attempts ?? 0,
        lastStatusCode: previous?.lastStatusCode ?? null,
        lastError: previous?.lastError ?? null,
        lastAttemptAt: previous?.lastAttemptAt ?? null,
        nextAttemptAt: null,
        deliveredAt: null,
        ...(previous?.redeliveries !== undefined ? { redeliveries: previous.redeliveries } : {}),
        ...patch,
        history: [...(previous?.history ?? []), line].slice(-MAX_ATTEMPT_HISTORY),
      };
      await writeDelivery(deps.redis, deps.prefix, data.jobId, status, deps.recordTtlS);
    }
  };
}
