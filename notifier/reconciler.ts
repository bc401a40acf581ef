import type { Redis } from 'ioredis';
import { isFinished, type JobRecord } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import type { WebhookOutbox } from '../shared/webhooks/deliveries.js';
import { finishedEvent } from '../shared/webhooks/events.js';

/**
 * Turns finished jobs into webhook messages. Two paths feed it: the live `completed`/`failed`
 * events (fast), and a periodic sweep over the jobs that finished since the last sweep (a
 * persisted cursor, with overlap), which catches whatever the live path missed — a notifier that
 * was down, a crash between "job finished" and "message enqueued". Both enqueue the same
 * deterministic message, so doing it twice is harmless.
 */

/** Finish times are stamped a moment before the job lands in the finished set: sweep back this far. */
const OVERLAP_MS = 60_000;
/** A notifier's first sweep ever looks back this far. */
const FIRST_LOOKBACK_MS = 3_600_000;
const PAGE = 500;

export interface FinishedJobs {
  get(id: string): Promise<JobRecord | null>;
  finishedBetween(fromMs: number, toMs: number, offset: number, limit: number): Promise<{ ids: string[]; more: boolean }>;
}

export interface ReconcilerDeps {
  jobs: FinishedJobs;
  outbox: Pick<WebhookOutbox, 'emit'>;
  redis: Redis;
  prefix: string;
  logger: Logger;
}

export class Reconciler {
  private sweeping: Promise<number> | undefined;

  constructor(private readonly deps: ReconcilerDeps) {}

  private get cursorKey(): string {
    return `${this.deps.prefix}:webhooks:swept-until`;
  }

  /** Enqueues the finished event of job `id` if it has a webhook that wants it; true when it does. */
  async emitFinished(id: string): Promise<boolean> {
    const record = await this.deps.jobs.get(id);
    if (!record || !isFinished(record.status) || !record.payload.webhook) return false;
    const event = finishedEvent(record.status);
    if (!event) return false;
    return this.deps.outbox.emit(record, event, record.finishedAt ?? Date.now());
  }

  /** One sweep; resolves with the number of messages (re-)enqueued. Concurrent calls share one sweep. */
  sweep(): Promise<number> {
    this.sweeping ??= this.runSweep().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  private async runSweep(): Promise<number> {
    const { redis, jobs, logger } = this.deps;
    const now = Date.now();
    const saved = Number(await redis.get(this.cursorKey));
    const from = (Number.isFinite(saved) && saved > 0 ? saved : now - FIRST_LOOKBACK_MS) - OVERLAP_MS;
    let emitted = 0;
    for (let offset = 0; ; offset += PAGE) {
      const { ids, more } = await jobs.finishedBetween(from, now, offset, PAGE);
      for (const id of ids) {
        try {
          if (await this.emitFinished(id)) emitted += 1;
        } catch (err) {
          // Leave the cursor where it was: the next sweep tries this window again.
          logger.warn({ err, jobId: id }, 'could not enqueue a webhook message; will retry');
          return emitted;
        }
      }
      if (!more) break;
    }
    await redis.set(this.cursorKey, String(now));
    return emitted;
  }
}
