import type { JobRecord } from '../shared/job-queue.js';

/**
 * The HTTP status a synchronous route answers for a job that ended without its image: whose fault
 * it was, read from the job's stable error code. The body is the error shape plus the job.
 *
 * | the job ended | status |
 * | --- | --- |
 * | failed `invalid_request`, `unknown_scheduler` (bad input the worker refused) | 422 |
 * | failed `timeout` (ran past its `timeout_s` / JOB_MAX_RUN_S) | 504 |
 * | `expired` (still queued past its `ttl_s`) | 504 |
 * | `canceled` | 409 |
 * | failed `storage_error`, or a model/worker that is unavailable | 503, with Retry-After |
 * | failed for anything else (`internal_error`, a worker that died mid-job) | 500 |
 */
const BY_CODE: Readonly<Record<string, number>> = {
  invalid_request: 422,
  unknown_scheduler: 422,
  timeout: 504,
  expired: 504,
  canceled: 409,
  storage_error: 503,
  model_unavailable: 503,
  worker_unavailable: 503,
};

export function failedJobStatus(record: Pick<JobRecord, 'status' | 'error'>): number {
  if (record.status === 'canceled') return 409;
  return BY_CODE[record.error?.code ?? ''] ?? 500;
}

/** Extra headers for that answer: a service-side outage says when to try again. */
export function failedJobHeaders(status: number): Record<string, string> {
  return status === 503 ? { 'Retry-After': '5' } : {};
}
