import type { Redis } from 'ioredis';
import { DEFAULT_QUEUE } from './model-catalogue.js';

/**
 * Ending a job that is still queued (waiting, delayed for a retry, or prioritized) without any
 * worker running it: a cancel, or its `ttl_s` running out. Done atomically in Redis, so a worker
 * either took the job first (then it is running) or never gets it; mirrors what BullMQ's own
 * scripts write for a failed job (hash fields, the failed set scored by finish time, a `failed`
 * event), with the reason `<code>: <message>` the rest of the service reads the outcome from.
 */

/** BullMQ's default length cap of a queue's event stream. */
export const MAX_EVENTS = 10_000;

/** Lua: `failQueued(p, id, reason, now, maxEvents)` → 1 done, 0 not queued (running or finished), -1 no such job. `p` is the queue's key prefix. */
const FAIL_QUEUED_LUA = `
local function failQueued(p, id, reason, now, maxEvents)
  if redis.call('EXISTS', p .. id) == 0 then return -1 end
  local prev
  if redis.call('LREM', p .. 'wait', 0, id) > 0 then prev = 'waiting'
  elseif redis.call('LREM', p .. 'paused', 0, id) > 0 then prev = 'waiting'
  elseif redis.call('ZREM', p .. 'delayed', id) > 0 then prev = 'delayed'
  elseif redis.call('ZREM', p .. 'prioritized', id) > 0 then prev = 'prioritized'
  else return 0 end
  redis.call('HSET', p .. id, 'failedReason', reason, 'finishedOn', now)
  redis.call('ZADD', p .. 'failed', now, id)
  redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxEvents, '*', 'event', 'failed', 'jobId', id, 'failedReason', reason, 'prev', prev)
  return 1
end
`;

/** ARGV: queue key prefix, job id, reason, now, max events. */
export const CANCEL_QUEUED_SCRIPT = `${FAIL_QUEUED_LUA}
return failQueued(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
`;

/**
 * Every job whose expiry (a sorted set: job id → expiry time, ms) has come: still queued, it ends
 * `expired`; running or finished, it only leaves the set. KEYS: the expiry set · ARGV: queue key
 * prefix, now, max events, batch size. Returns the ids it expired.
 */
const EXPIRE_DUE_SCRIPT = `${FAIL_QUEUED_LUA}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local expired = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  if failQueued(ARGV[1], id, 'expired: the job was still queued when its ttl_s ran out; it never ran', ARGV[2], ARGV[3]) == 1 then
    table.insert(expired, id)
  end
end
return expired
`;

/** The sorted set of a queue's queued jobs' expiry times (the default queue's keeps its name from before there were several). */
export const expiryKey = (prefix: string, queue: string = DEFAULT_QUEUE) => (queue === DEFAULT_QUEUE ? `${prefix}:jobs:expiry` : `${prefix}:jobs:expiry:${queue}`);

/**
 * Ends every queued job whose `ttl_s` has run out (status `expired`; it never runs and no longer
 * counts as load); resolves with their ids. Safe to run from any number of processes at once.
 */
export async function expireDueJobs(redis: Redis, prefix: string, queueKeyPrefix: string, now = Date.now(), queue: string = DEFAULT_QUEUE): Promise<string[]> {
  const expired: string[] = [];
  const key = expiryKey(prefix, queue);
  for (;;) {
    const batch = (await redis.eval(EXPIRE_DUE_SCRIPT, 1, key, queueKeyPrefix, now, MAX_EVENTS, 200)) as string[];
    expired.push(...batch);
    if ((await redis.zcount(key, '-inf', now)) === 0) return expired;
  }
}
