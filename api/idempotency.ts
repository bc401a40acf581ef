import { randomUUID } from 'node:crypto';
import type { Request } from 'express';
import { bodyHash, MemoryIdempotencyStore, type IdempotencyClaim, type IdempotencyStore } from '../shared/idempotency.js';
import type { JobRecord } from '../shared/job-queue.js';
import type { JobPayload } from '../shared/job-schema.js';
import type { AppDeps } from './deps.js';
import { HttpError } from './http-errors.js';

/**
 * `Idempotency-Key` on POST /v1/jobs: the same key (for the same API key) returns the job the
 * first request made, for IDEMPOTENCY_TTL_S; the same key with another body is a 409. A
 * duplicate that arrives while the first request is still creating its job waits for it.
 */

/** How long a duplicate waits for the job of the request that claimed the key first. */
const CLAIM_WAIT_MS = 3000;

const fallbackStores = new WeakMap<AppDeps, IdempotencyStore>();

/** The request's Idempotency-Key, undefined when it has none; a malformed one is a 400. */
export function idempotencyKeyOf(req: Request): string | undefined {
  const key = req.get('idempotency-key');
  if (key === undefined) return undefined;
  if (!/^[\x21-\x7e]{1,255}$/.test(key)) {
    throw new HttpError(400, 'invalid_request', 'Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice).', 'Idempotency-Key');
  }
  return key;
}

async function waitForJob(deps: AppDeps, id: string): Promise<JobRecord | null> {
  const until = Date.now() + CLAIM_WAIT_MS;
  for (;;) {
    const record = await deps.queue.get(id);
    if (record || Date.now() >= until) return record;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function submitIdempotently(
  deps: AppDeps,
  scope: string,
  key: string,
  body: unknown,
  payload: JobPayload,
): Promise<{ record: JobRecord; replayed: boolean }> {
  let store = deps.idempotency ?? fallbackStores.get(deps);
  if (!store) {
    store = new MemoryIdempotencyStore();
    fallbackStores.set(deps, store);
  }
  const ttlS = deps.config.auth.idempotencyTtlS;
  const hash = bodyHash(body);
  const create = async (claim: IdempotencyClaim) => {
    try {
      return { record: await deps.queue.enqueue(payload, { jobId: claim.jobId }), replayed: false };
    } catch (err) {
      // Nothing was created: let a retry with the same key try again.
      await store.release(scope, key, claim).catch(() => undefined);
      throw err;
    }
  };

  let mine: IdempotencyClaim = { jobId: randomUUID(), bodyHash: hash };
  let existing = await store.claim(scope, key, mine, ttlS);
  for (let round = 0; ; round += 1) {
    if (existing === null) return create(mine);
    if (existing.bodyHash !== hash) {
      throw new HttpError(
        409,
        'idempotency_conflict',
        'This Idempotency-Key was already used with a different request body; use a new key for a new request.',
        'Idempotency-Key',
      );
    }
    const record = await waitForJob(deps, existing.jobId);
    if (record) return { record, replayed: true };
    if (round >= 2) {
      throw new HttpError(409, 'idempotency_conflict', 'A request with this Idempotency-Key is still in progress; retry shortly.', 'Idempotency-Key');
    }
    // The request that claimed the key never created its job (it died, or the job aged out): take the key over.
    const next: IdempotencyClaim = { jobId: randomUUID(), bodyHash: hash };
    if (await store.replace(scope, key, existing, next, ttlS)) {
      mine = next;
      existing = null;
    } else {
      existing = await store.claim(scope, key, next, ttlS);
      if (existing === null) mine = next;
    }
  }
}
