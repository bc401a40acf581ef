import type { Readable } from 'node:stream';
import type { JobResult } from '../shared/job-queue.js';
import { resultKey, type ImageStore } from '../shared/storage/index.js';

/**
 * A job's writes to storage, made to outlast outages: an upload that fails is tried again with
 * backoff for up to `spanMs` (the images stay in memory; the GPU work is not thrown away), and
 * the storage's health is reported on every attempt so the worker stops taking new jobs while
 * it is down. The finished run's result is stored beside its images, so a run whose completion
 * never reached Redis (an outage longer than the job lock, a worker killed right after the
 * upload) is completed from it rather than generated again.
 */

export interface StorageRetry {
  /** How long a failing write is retried before the attempt fails (0: once). */
  spanMs: number;
  /** The longest wait between two tries (the wait doubles from a quarter second up to this). */
  maxDelayMs: number;
}

/** Told about every storage outcome: an error (storage is failing) or null (it answered). */
export type StorageHealthListener = (problem: Error | null) => void;

export const FIRST_RETRY_DELAY_MS = 250;

/** The wait before try number `attempt` (1 = the first retry), doubling up to `maxDelayMs`. */
export function retryDelayMs(attempt: number, maxDelayMs: number): number {
  return Math.min(maxDelayMs, FIRST_RETRY_DELAY_MS * 2 ** Math.max(0, attempt - 1));
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleepUnlessAborted(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `write` until it succeeds or `retry.spanMs` has passed since the first failure (then the
 * last error is thrown). `onHealth` hears each failure and the success after them; `signal`
 * (cancel, deadline) ends the waiting at once.
 */
export async function writeWithRetry(
  write: () => Promise<void>,
  retry: StorageRetry,
  options: { signal?: AbortSignal; onHealth?: StorageHealthListener; onRetry?: (err: unknown, attempt: number, delayMs: number) => void } = {},
): Promise<void> {
  let firstFailure: number | undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      await write();
      if (firstFailure !== undefined) options.onHealth?.(null);
      return;
    } catch (err) {
      firstFailure ??= Date.now();
      options.onHealth?.(err instanceof Error ? err : new Error(String(err)));
      const delay = retryDelayMs(attempt, retry.maxDelayMs);
      if (Date.now() + delay - firstFailure > retry.spanMs) throw err;
      options.onRetry?.(err, attempt, delay);
      await sleepUnlessAborted(delay, options.signal);
    }
  }
}

interface StoredResult {
  /** The job's creation time: a job id used again later (an expired idempotency key) is another job. */
  jobCreatedAt: number;
  result: JobResult;
}

/** The result an earlier run of this very job stored, or null. Throws when storage cannot be read. */
export async function readStoredResult(store: ImageStore, jobId: string, jobCreatedAt: number): Promise<JobResult | null> {
  const object = await store.get(resultKey(jobId));
  if (!object) return null;
  let stored: Partial<StoredResult>;
  try {
    stored = JSON.parse(await readAll(object.body)) as Partial<StoredResult>;
  } catch {
    return null;
  }
  const result = stored.result;
  if (stored.jobCreatedAt !== jobCreatedAt || !result || !Array.isArray(result.images)) return null;
  return result;
}

export function storedResultBytes(jobCreatedAt: number, result: JobResult): Uint8Array {
  const stored: StoredResult = { jobCreatedAt, result };
  return new TextEncoder().encode(JSON.stringify(stored));
}

async function readAll(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks).toString('utf8');
}
