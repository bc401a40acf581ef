/**
 * Errors with a stable `code` that the API returns and that decide retries: `retryable` false
 * means the job fails at once (bad input, canceled); true means storage or network faults
 * worth another attempt with backoff.
 */
export class ServiceError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}

/**
 * What an outside system said, in one line for logs and job errors: the system error code
 * (`ENOSPC: no space left on device …`), or an S3 error's name and HTTP status.
 */
export function describeCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: unknown; $metadata?: { httpStatusCode?: number }; Code?: unknown };
  const status = e.$metadata?.httpStatusCode;
  const code = typeof e.code === 'string' ? e.code : typeof e.Code === 'string' ? e.Code : e.name !== 'Error' ? e.name : undefined;
  const head = [code, status !== undefined ? `HTTP ${status}` : undefined].filter(Boolean).join(', ');
  const message = e.message && !e.message.startsWith(`${code}:`) ? e.message : e.message.slice(`${code}:`.length).trim();
  return head ? `${head}: ${message || 'no message'}` : message || e.name;
}

/** A storage fault; the message carries the underlying error (ENOSPC, ENOTDIR, an S3 error) so it reaches logs and the job. */
export class StorageError extends ServiceError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('storage_error', options?.cause === undefined ? message : `${message}: ${describeCause(options.cause)}`, true);
    this.name = 'StorageError';
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

export class QueueUnavailableError extends ServiceError {
  constructor(message = 'The job queue (Redis) is unreachable; try again shortly.') {
    super('queue_unavailable', message, true);
    this.name = 'QueueUnavailableError';
  }
}

/** Resolves `promise` or rejects after `ms` with `onTimeout()`; used to fail fast on a dead Redis. */
export function withDeadline<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** ioredis refuses commands at once while disconnected (no offline queue); its messages then say so. */
const REDIS_AWAY = /Connection is closed|Stream isn't writeable|ECONNREFUSED|max retries|enableOfflineQueue/i;

/**
 * Resolves `promise`, or rejects with `QueueUnavailableError` after `ms` or when ioredis reports
 * Redis away, so a request on a dead Redis gets a 503 at once instead of a hung socket.
 */
export function failFastOnRedis<T>(promise: Promise<T>, ms: number): Promise<T> {
  return withDeadline(promise, ms, () => new QueueUnavailableError()).catch((err: unknown) => {
    if (err instanceof Error && !(err instanceof QueueUnavailableError) && REDIS_AWAY.test(err.message)) {
      throw new QueueUnavailableError();
    }
    throw err;
  });
}
