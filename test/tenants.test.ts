import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { WebhookSecretsSchema } from '../api/response-schemas.js';
import { startApi, type RunningApi } from '../api/server.js';
import { createRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { silentLogger, startStack, type TestStack } from './helpers/stack.js';
import { startReceiver, until, type Receiver } from './helpers/webhook-receiver.js';

/**
 * API keys as tenants: each key signs its webhooks with its own secrets (another key cannot forge
 * them, nor can the operator's WEBHOOK_SECRETS), rotates them with an overlap, sees only its own
 * running job ids in /v1/workers, and is held to its own queue cap and rate limits — counted in
 * Redis, so two API replicas share them.
 */
const KEY_A = 'tenant-alpha-0123456789abcdef';
const KEY_B = 'tenant-bravo-0123456789abcdef';
const GLOBAL_SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const as = (key: string | null, extra: Record<string, string> = {}) => ({ ...(key ? { authorization: `Bearer ${key}` } : {}), ...extra });

let dir: string;
let hooks: Receiver;
const stacks: TestStack[] = [];
const extraApis: RunningApi[] = [];

async function stackWith(env: Record<string, string>, options: Parameters<typeof startStack>[1] = {}): Promise<TestStack> {
  const stack = await startStack(
    { MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, DEFAULT_STEPS: '2', API_KEYS: `${KEY_A},${KEY_B}`, ...env },
    options,
  );
  stacks.push(stack);
  return stack;
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-tenants-'));
  hooks = await startReceiver();
});
afterAll(async () => {
  for (const api of extraApis) await api.close();
  for (const stack of stacks) await stack.close();
  await hooks?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const json = async (res: Response) => (await res.json()) as Record<string, any>;

describe('webhook secrets per API key', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await stackWith({ WEBHOOK_SECRETS: GLOBAL_SECRET, WEBHOOK_ALLOW_HOSTS: '127.0.0.1', WEBHOOK_RETRY_SCHEDULE: '0' });
  });
  const secrets = (key: string | null) => fetch(`${stack.api.url}/v1/webhook-secrets`, { headers: as(key) });
  const rotate = (key: string, body: unknown) =>
    fetch(`${stack.api.url}/v1/webhook-secrets/rotate`, { method: 'POST', headers: as(key, { 'content-type': 'application/json' }), body: JSON.stringify(body) });
  const submitWithHook = async (key: string, prompt: string) => {
    const res = await fetch(`${stack.api.url}/v1/jobs`, {
      method: 'POST',
      headers: as(key, { 'content-type': 'application/json' }),
      body: JSON.stringify({ prompt, img_size: 64, webhook: { url: hooks.url } }),
    });
    expect(res.status).toBe(202);
    return (await json(res)).id as string;
  };
  const hookFor = async (jobId: string) =>
    (await until(async () => hooks.received.find((h) => JSON.parse(h.body).data.id === jobId), (h) => h !== undefined))!;
  const verifies = (secret: string, hook: { body: string; headers: Record<string, string> }) => {
    try {
      new Webhook(secret).verify(hook.body, hook.headers);
      return true;
    } catch {
      return false;
    }
  };

  it('gives each key its own secret, to that key only', async () => {
    expect((await secrets(null)).status).toBe(401);
    const a = await json(await secrets(KEY_A));
    const b = await json(await secrets(KEY_B));
    expect(a.secrets).toHaveLength(1);
    expect(a.secrets[0]).toMatchObject({ id: expect.stringMatching(/^whs_/), secret: expect.stringMatching(/^whsec_/), expires_at: null });
    expect(b.secrets[0].secret).not.toBe(a.secrets[0].secret);
    // Asking again gives the same secret: it is made once.
    expect((await json(await secrets(KEY_A))).secrets).toEqual(a.secrets);
    expect(() => WebhookSecretsSchema.parse(a)).not.toThrow();
  });

  it("signs a job's webhooks with its key's secret only: another key's, or the global one, cannot forge them", async () => {
    const a = (await json(await secrets(KEY_A))).secrets[0].secret as string;
    const b = (await json(await secrets(KEY_B))).secrets[0].secret as string;
    const hook = await hookFor(await submitWithHook(KEY_A, 'signed for alpha'));
    expect(verifies(a, hook)).toBe(true);
    expect(verifies(b, hook)).toBe(false);
    expect(verifies(GLOBAL_SECRET, hook)).toBe(false);
    expect(hook.headers['webhook-signature']!.split(' ')).toHaveLength(1);
  });

  it('rotates with an overlap: both secrets sign until the old one ends, then only the new one', async () => {
    const before = (await json(await secrets(KEY_A))).secrets[0];
    const rotated = await rotate(KEY_A, { overlap_s: 3600 });
    expect(rotated.status).toBe(201);
    const after = (await json(rotated)).secrets;
    expect(after).toHaveLength(2);
    expect(after[0].secret).not.toBe(before.secret);
    expect(after[0].expires_at).toBeNull();
    expect(after[1]).toMatchObject({ id: before.id, secret: before.secret });
    expect(Date.parse(after[1].expires_at) - Date.now()).toBeGreaterThan(3500_000);
    const during = await hookFor(await submitWithHook(KEY_A, 'during the overlap'));
    expect(during.headers['webhook-signature']!.split(' ')).toHaveLength(2);
    expect(verifies(after[0].secret, during) && verifies(before.secret, during)).toBe(true);

    const ended = (await json(await rotate(KEY_A, { overlap_s: 0 }))).secrets;
    expect(ended).toHaveLength(1);
    const later = await hookFor(await submitWithHook(KEY_A, 'after the overlap'));
    expect(verifies(ended[0].secret, later)).toBe(true);
    expect(verifies(before.secret, later) || verifies(after[0].secret, later)).toBe(false);
    // Key B's secret never moved.
    expect((await json(await secrets(KEY_B))).secrets).toHaveLength(1);
  });

  it('refuses a malformed rotation by field', async () => {
    for (const [body, field] of [
      [{ overlap_s: -1 }, 'overlap_s'],
      [{ overlap_s: 10 ** 9 }, 'overlap_s'],
      [{ overlap_s: '60' }, 'overlap_s'],
      [{ overlap: 60 }, 'overlap'],
      [JSON.parse('{"__proto__": {"x": 1}}'), '__proto__'],
    ] as const) {
      const res = await rotate(KEY_B, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect((await json(res)).error.field).toBe(field);
    }
  });

  it("hides another key's running job id in /v1/workers", async () => {
    const jobA = await submitWithHook(KEY_A, 'watched by the registry');
    const redis = createRedis(stack.config.redisUrl, 'worker');
    const registry = new WorkerRegistry(redis, stack.config.queuePrefix);
    const now = Date.now();
    await registry.put({ id: 'tenant-worker', slot: 'gpu0', state: 'busy', currentJob: jobA, startedAt: now, lastSeenAt: now, jobsDone: 0, jobsFailed: 0, host: 'h', pid: 1, model: 'm' }, 10_000);
    try {
      const seen = async (key: string) => ((await json(await fetch(`${stack.api.url}/v1/workers`, { headers: as(key) }))).workers as any[]).find((w) => w.id === 'tenant-worker');
      expect((await seen(KEY_A)).current_job).toBe(jobA);
      const other = await seen(KEY_B);
      expect(other.current_job).toBeNull();
      expect(other.state).toBe('busy');
    } finally {
      await registry.remove('tenant-worker');
      await redis.quit();
    }
  });
});

describe('a cap on queued jobs per key', () => {
  it('answers 429 queued_jobs_limit past the cap, for that key only, and frees a place when a job ends', async () => {
    const stack = await stackWith({ MAX_QUEUED_JOBS_PER_KEY: '3' }, { worker: false, notifier: false });
    const submit = (key: string) =>
      fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: as(key, { 'content-type': 'application/json' }), body: JSON.stringify({ prompt: 'capped', img_size: 64 }) });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await submit(KEY_A);
      expect(res.status, JSON.stringify(await res.clone().json())).toBe(202);
      ids.push((await json(res)).id);
    }
    const over = await submit(KEY_A);
    expect(over.status).toBe(429);
    expect((await json(over)).error).toMatchObject({ code: 'queued_jobs_limit', message: expect.stringContaining('3') });
    expect(await stack.queue.count()).toBe(3);
    expect((await submit(KEY_B)).status).toBe(202);
    await fetch(`${stack.api.url}/v1/jobs/${ids[0]}/cancel`, { method: 'POST', headers: as(KEY_A) });
    expect((await submit(KEY_A)).status).toBe(202);
  });
});

describe('rate limits per key', () => {
  it('answers 429 with Retry-After past the limit, counted across API replicas, per key', async () => {
    const stack = await stackWith({ RATE_LIMIT_REQUESTS_PER_MIN: '6', RATE_LIMIT_SUBMISSIONS_PER_MIN: '2' }, { worker: false, notifier: false });
    const replica = await startApi(stack.config, silentLogger);
    extraApis.push(replica);
    const bases = [stack.api.url, replica.url];
    // Submissions: 2 a minute, whichever replica they reach.
    const submit = (i: number) =>
      fetch(`${bases[i % 2]}/v1/jobs`, { method: 'POST', headers: as(KEY_A, { 'content-type': 'application/json' }), body: JSON.stringify({ prompt: 'limited', img_size: 64 }) });
    expect((await submit(0)).status).toBe(202);
    expect((await submit(1)).status).toBe(202);
    const third = await submit(2);
    expect(third.status).toBe(429);
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await json(third)).error.code).toBe('rate_limited');
    // Requests of any kind: 6 a minute; 3 used by the submissions above.
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await fetch(`${bases[i % 2]}/v1/queue`, { headers: as(KEY_A) })).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
    // Key B has its own budget.
    expect((await fetch(`${replica.url}/v1/queue`, { headers: as(KEY_B) })).status).toBe(200);
  });
});
