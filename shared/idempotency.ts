import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * `Idempotency-Key` claims: key (scoped to the API key) → the job it created and a hash of the
 * request body. `claim` is one SET NX, so of two concurrent identical requests exactly one
 * creates the job; the other reads the winner's claim.
 */
export interface IdempotencyClaim {
  jobId: string;
  bodyHash: string;
}

export interface IdempotencyStore {
  /** Claims `key` for `claim`; null when this call won, else the claim that was there first. */
  claim(scope: string, key: string, claim: IdempotencyClaim, ttlS: number): Promise<IdempotencyClaim | null>;
  /** Swaps `previous` for `next` (a claim whose job never appeared); false when the claim changed meanwhile. */
  replace(scope: string, key: string, previous: IdempotencyClaim, next: IdempotencyClaim, ttlS: number): Promise<boolean>;
  /** Drops `claim` (its job could not be created), unless the claim changed meanwhile. */
  release(scope: string, key: string, claim: IdempotencyClaim): Promise<void>;
}

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');

/** JSON with object keys sorted, so the same body hashes the same whatever its key order. */
export function bodyHash(body: unknown): string {
  const canonical = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(canonical);
    if (value && typeof value === 'object') {
      return Object.fromEntries(
        Object.keys(value)
          .sort()
          .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
      );
    }
    return value;
  };
  return digest(JSON.stringify(canonical(body) ?? null));
}

const COMPARE_AND_SET = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
`;

export class RedisIdempotencyStore implements IdempotencyStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(scope: string, key: string): string {
    return `${this.prefix}:idempotency:${scope}:${digest(key)}`;
  }

  async claim(scope: string, key: string, claim: IdempotencyClaim, ttlS: number): Promise<IdempotencyClaim | null> {
    const redisKey = this.key(scope, key);
    for (let tries = 0; tries < 3; tries += 1) {
      if ((await this.redis.set(redisKey, JSON.stringify(claim), 'EX', ttlS, 'NX')) === 'OK') return null;
      const existing = await this.redis.get(redisKey);
      // Expired between the two commands: claim again.
      if (existing !== null) return JSON.parse(existing) as IdempotencyClaim;
    }
    throw new Error('idempotency key claim kept expiring');
  }

  async replace(scope: string, key: string, previous: IdempotencyClaim, next: IdempotencyClaim, ttlS: number): Promise<boolean> {
    const done = await this.redis.eval(COMPARE_AND_SET, 1, this.key(scope, key), JSON.stringify(previous), JSON.stringify(next), ttlS);
    return done === 1;
  }

  async release(scope: string, key: string, claim: IdempotencyClaim): Promise<void> {
    await this.redis.eval(COMPARE_AND_SET, 1, this.key(scope, key), JSON.stringify(claim), '', 0);
  }
}

/** For apps built without Redis (tests with fakes): the same contract within one process. */
export class MemoryIdempotencyStore implements IdempotencyStore {
  private readonly claims = new Map<string, { value: string; expiresAt: number }>();

  private read(id: string): string | null {
    const entry = this.claims.get(id);
    if (!entry || entry.expiresAt <= Date.now()) {
      this.claims.delete(id);
      return null;
    }
    return entry.value;
  }

  async claim(scope: string, key: string, claim: IdempotencyClaim, ttlS: number): Promise<IdempotencyClaim | null> {
    const id = `${scope}:${key}`;
    const existing = this.read(id);
    if (existing !== null) return JSON.parse(existing) as IdempotencyClaim;
    this.claims.set(id, { value: JSON.stringify(claim), expiresAt: Date.now() + ttlS * 1000 });
    return null;
  }

  async replace(scope: string, key: string, previous: IdempotencyClaim, next: IdempotencyClaim, ttlS: number): Promise<boolean> {
    const id = `${scope}:${key}`;
    if (this.read(id) !== JSON.stringify(previous)) return false;
    this.claims.set(id, { value: JSON.stringify(next), expiresAt: Date.now() + ttlS * 1000 });
    return true;
  }

  async release(scope: string, key: string, claim: IdempotencyClaim): Promise<void> {
    const id = `${scope}:${key}`;
    if (this.read(id) === JSON.stringify(claim)) this.claims.delete(id);
  }
}
