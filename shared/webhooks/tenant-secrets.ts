import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { SECRET_PREFIX } from './signing.js';

/**
 * Each API key's own webhook signing secrets, so one tenant cannot sign (forge) events another
 * tenant's receiver accepts. A key gets its first secret on first use; rotating adds a new one and
 * gives the ones in use an end (`expiresAt`) after an overlap, during which deliveries carry one
 * signature per live secret (Standard Webhooks: receivers accept any that matches). Kept in Redis
 * under the deployment's prefix, readable only through the key that owns them (the API checks).
 *
 * Layout: `<prefix>:tenants:<owner>:webhook-secrets` → JSON list of TenantSecret, newest first.
 */
export interface TenantSecret {
  id: string;
  /** `whsec_` + base64 of 32 random bytes. */
  secret: string;
  createdAt: number;
  /** null: in use until the next rotation. */
  expiresAt: number | null;
}

/** Live secrets a key may hold at once; a rotation past it ends the oldest at once. */
export const MAX_LIVE_SECRETS = 5;
/** The longest overlap a rotation may ask for. */
export const MAX_OVERLAP_S = 7 * 24 * 3600;

export const tenantSecretsKey = (prefix: string, owner: string) => `${prefix}:tenants:${owner}:webhook-secrets`;

/**
 * One script for both writes, so concurrent rotations (or an API replica creating the first secret
 * while another rotates) never lose a secret: drop the expired, add `ARGV[1]` (a new secret) when
 * asked to (`ARGV[4]` = 1) or when none is live, end the others `ARGV[3]` ms from now, keep at most
 * MAX_LIVE_SECRETS. Times are milliseconds (13 digits: exact in cjson's 14-digit numbers).
 */
const UPDATE_SCRIPT = `
local now = tonumber(ARGV[2])
local overlap = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local raw = redis.call('GET', KEYS[1])
local list = raw and cjson.decode(raw) or {}
local live = {}
for _, s in ipairs(list) do
  if s.expiresAt == cjson.null or s.expiresAt == nil or s.expiresAt > now then table.insert(live, s) end
end
if force or #live == 0 then
  for _, s in ipairs(live) do
    local ends = now + overlap
    if s.expiresAt == cjson.null or s.expiresAt == nil or s.expiresAt > ends then s.expiresAt = ends end
  end
  table.insert(live, 1, cjson.decode(ARGV[1]))
end
local kept = {}
for _, s in ipairs(live) do
  if s.expiresAt == cjson.null or s.expiresAt == nil or s.expiresAt > now then table.insert(kept, s) end
end
live = kept
while #live > tonumber(ARGV[5]) do table.remove(live) end
local out = cjson.encode(live)
redis.call('SET', KEYS[1], out)
return out
`;

function newSecret(now: number): TenantSecret {
  return { id: `whs_${randomUUID().replace(/-/g, '').slice(0, 16)}`, secret: `${SECRET_PREFIX}${randomBytes(32).toString('base64')}`, createdAt: now, expiresAt: null };
}

export class TenantSecretStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private async update(owner: string, rotate: boolean, overlapS: number, now: number): Promise<TenantSecret[]> {
    const raw = (await this.redis.eval(
      UPDATE_SCRIPT,
      1,
      tenantSecretsKey(this.prefix, owner),
      JSON.stringify(newSecret(now)),
      String(now),
      String(Math.round(overlapS * 1000)),
      rotate ? '1' : '0',
      String(MAX_LIVE_SECRETS),
    )) as string;
    return parseList(raw);
  }

  /** The key's live secrets, newest first; none yet: the first is made now. */
  ensure(owner: string, now = Date.now()): Promise<TenantSecret[]> {
    return this.update(owner, false, 0, now);
  }

  /** A new secret; the ones in use stay valid `overlapS` more seconds (0: they end now). Newest first. */
  rotate(owner: string, overlapS: number, now = Date.now()): Promise<TenantSecret[]> {
    return this.update(owner, true, Math.min(Math.max(0, overlapS), MAX_OVERLAP_S), now);
  }

  /** The key's live secrets without making one (the notifier signs with these). */
  async live(owner: string, now = Date.now()): Promise<TenantSecret[]> {
    const raw = await this.redis.get(tenantSecretsKey(this.prefix, owner));
    return parseList(raw).filter((s) => s.expiresAt === null || s.expiresAt > now);
  }
}

function parseList(raw: string | null): TenantSecret[] {
  if (!raw) return [];
  const value: unknown = JSON.parse(raw);
  // cjson writes an empty list as {}.
  return Array.isArray(value) ? (value as TenantSecret[]) : [];
}
