import type { RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import { ownerOf } from './auth.js';
import { HttpError } from './http-errors.js';

/**
 * Per-API-key rate limits, counted in Redis so that every API replica shares them
 * (rate-limiter-flexible, a fixed one-minute window per key): every request to /v1 and
 * /dreambooth, and job submissions apart. Over a limit: 429 `rate_limited` with Retry-After.
 * Without API_KEYS there is no key to count by, and nothing is limited. A Redis that does not
 * answer lets the request through: the queue itself then answers 503.
 */
export type LimitKind = 'request' | 'submission';

export interface TenantLimiter {
  /** null when `owner` may go on; else how many ms until it may. */
  take(kind: LimitKind, owner: string): Promise<number | null>;
}

export function createTenantLimiter(redis: Redis, prefix: string, limits: Config['tenants'], logger: Logger): TenantLimiter {
  const make = (kind: LimitKind, perMin: number) =>
    perMin > 0 ? new RateLimiterRedis({ storeClient: redis, keyPrefix: `${prefix}:ratelimit:${kind}`, points: perMin, duration: 60 }) : null;
  const limiters: Record<LimitKind, RateLimiterRedis | null> = {
    request: make('request', limits.requestsPerMin),
    submission: make('submission', limits.submissionsPerMin),
  };
  return {
    async take(kind, owner) {
      const limiter = limiters[kind];
      if (!limiter) return null;
      try {
        await limiter.consume(owner);
        return null;
      } catch (err) {
        if (err instanceof RateLimiterRes) return err.msBeforeNext;
        logger.debug({ err, kind }, 'rate limit not checked: Redis did not answer');
        return null;
      }
    },
  };
}

/** Express middleware: counts the request against its key's `kind` limit; over it, a 429. */
export function limitBy(kind: LimitKind, limiter: TenantLimiter | undefined): RequestHandler {
  return (_req, res, next) => {
    const owner = ownerOf(res);
    if (!limiter || owner === undefined) return next();
    limiter.take(kind, owner).then(
      (waitMs) => {
        if (waitMs === null) return next();
        const seconds = Math.max(1, Math.ceil(waitMs / 1000));
        const what = kind === 'request' ? 'requests' : 'job submissions';
        next(new HttpError(429, 'rate_limited', `This API key made too many ${what}; try again in ${seconds} s.`, undefined, undefined, { 'Retry-After': String(seconds) }));
      },
      next,
    );
  };
}
