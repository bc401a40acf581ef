import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';
import { freePort, startReceiver, until, type Receiver } from './helpers/webhook-receiver.js';

/**
 * Webhooks end to end: API → worker → notifier → a real HTTP receiver on loopback (allow-listed),
 * signatures checked with the standardwebhooks package, retries on a short schedule.
 */

const secrets = [`whsec_${randomBytes(32).toString('base64')}`, `whsec_${randomBytes(24).toString('base64')}`];
const ATTEMPTS = 5;
let stack: TestStack;
let base: string;
let dir: string;
const receivers: Receiver[] = [];

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-webhooks-'));
  stack = await startStack({
    MODEL_DIR: inject('tinyModelDir'),
    STORAGE_LOCAL_DIR: dir,
    DEFAULT_STEPS: '2',
    MAX_STEPS: '900',
    WEBHOOK_SECRETS: secrets.join(' '),
    WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
    WEBHOOK_RETRY_SCHEDULE: Array.from({ length: ATTEMPTS }, (_, i) => (i === 0 ? '0' : '250ms')).join(','),
    WEBHOOK_TIMEOUT_MS: '2000',
  });
  base = stack.api.url;
});

afterAll(async () => {
  await Promise.all(receivers.map((r) => r.close()));
  await stack?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const receiver = async (...args: Parameters<typeof startReceiver>) => {
  const r = await startReceiver(...args);
  receivers.push(r);
  return r;
};

async function submit(body: Record<string, unknown>): Promise<Record<string, any>> {
  const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  return (await res.json()) as Record<string, any>;
}

const getJob = async (id: string) => (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as Record<string, any>;
const delivery = (job: Record<string, any>, event: string) =>
  (job.webhook?.deliveries as Record<string, any>[] | undefined)?.find((d) => d.event === event);

/** Verifies with each configured secret, as a receiver mid-rotation (knowing either) would. */
function verify(hook: { headers: Record<string, string>; body: string }) {
  const results = secrets.map((s) => new Webhook(s).verify(hook.body, hook.headers) as Record<string, any>);
  expect(results[0]).toEqual(results[1]);
  return results[0] as Record<string, any>;
}

describe('delivery', () => {
  it('POSTs a signed job.completed carrying the job as GET shows it, and records the delivery', async () => {
    const hooks = await receiver();
    const job = await submit({ prompt: 'a signed fox', img_size: 64, webhook: { url: hooks.url } });
    expect(job.webhook).toEqual({ url: hooks.url, events: ['completed', 'failed', 'canceled', 'expired'], deliveries: [] });
    const [hook] = await hooks.waitFor(1);
    const message = verify(hook!);
    expect(message.type).toBe('job.completed');
    expect(hook!.headers['webhook-id']).toMatch(/^msg_/);
    expect(hook!.headers['content-type']).toBe('application/json');
    expect(Number(hook!.headers['webhook-timestamp'])).toBeGreaterThan(Date.now() / 1000 - 60);
    const seen = await until(() => getJob(job.id), (j) => delivery(j, 'completed')?.state === 'delivered');
    const { webhook: _w1, ...viewNow } = seen;
    const { webhook: _w2, ...viewSent } = message.data;
    expect(viewSent).toEqual(viewNow);
    expect(message.data.status).toBe('succeeded');
    expect(message.timestamp).toBe(seen.finished_at);
    expect(delivery(seen, 'completed')).toMatchObject({
      webhook_id: hook!.headers['webhook-id'],
      state: 'delivered',
      attempts: 1,
      last_status_code: 204,
      next_attempt_at: null,
    });
    expect(hooks.received).toHaveLength(1);
  });

  it('sends started and completed when asked, each with an id of its own', async () => {
    const hooks = await receiver();
    const job = await submit({ prompt: 'two events', img_size: 64, webhook: { url: hooks.url, events: ['started', 'completed'] } });
    const received = await hooks.waitFor(2);
    const byType = new Map(received.map((h) => [verify(h).type as string, h]));
    expect([...byType.keys()].sort()).toEqual(['job.completed', 'job.started']);
    const started = verify(byType.get('job.started')!);
    expect(started.data).toMatchObject({ id: job.id, status: 'running' });
    expect(started.data.started_at).not.toBeNull();
    expect(byType.get('job.started')!.headers['webhook-id']).not.toBe(byType.get('job.completed')!.headers['webhook-id']);
  });

  it('reaches a receiver that was down for the first attempts, once it is back', async () => {
    const port = await freePort();
    const job = await submit({ prompt: 'patience', img_size: 64, webhook: { url: `http://127.0.0.1:${port}/hooks/sd` } });
    const failing = await until(() => getJob(job.id), (j) => (delivery(j, 'completed')?.attempts ?? 0) >= 2);
    expect(delivery(failing, 'completed')).toMatchObject({ state: 'retrying', last_status_code: null });
    expect(delivery(failing, 'completed')!.last_error).toMatch(/ECONNREFUSED|connect/);
    expect(delivery(failing, 'completed')!.next_attempt_at).not.toBeNull();
    const hooks = await receiver(undefined, port);
    const [hook] = await hooks.waitFor(1);
    expect(verify(hook!).data.id).toBe(job.id);
    const done = await until(() => getJob(job.id), (j) => delivery(j, 'completed')?.state === 'delivered');
    expect(delivery(done, 'completed')!.attempts).toBeGreaterThanOrEqual(3);
  });

  it('keeps the webhook-id and body across retries, so a deduplicating receiver acts once', async () => {
    const handled = new Set<string>();
    let effects = 0;
    // Acts on the event, then "crashes" before answering 2xx the first time.
    const hooks = await receiver((hook, index) => {
      const id = hook.headers['webhook-id'] as string;
      if (!handled.has(id)) {
        handled.add(id);
        effects += 1;
      }
      return { status: index === 0 ? 500 : 200 };
    });
    const job = await submit({ prompt: 'exactly once', img_size: 64, webhook: { url: hooks.url } });
    const [first, second] = await hooks.waitFor(2);
    expect(second!.headers['webhook-id']).toBe(first!.headers['webhook-id']);
    expect(second!.body).toBe(first!.body);
    verify(first!);
    verify(second!);
    expect(effects).toBe(1);
    const done = await until(() => getJob(job.id), (j) => delivery(j, 'completed')?.state === 'delivered');
    expect(delivery(done, 'completed')).toMatchObject({ attempts: 2, last_status_code: 200 });
  });

  it('treats a redirect as a failure and never follows it; the exhausted delivery is recorded', async () => {
    const target = await receiver();
    const hooks = await receiver(() => ({ status: 307, headers: { location: target.url } }));
    const job = await submit({ prompt: 'no detours', img_size: 64, webhook: { url: hooks.url } });
    const done = await until(() => getJob(job.id), (j) => delivery(j, 'completed')?.state === 'exhausted');
    expect(delivery(done, 'completed')).toMatchObject({ attempts: ATTEMPTS, last_status_code: 307, next_attempt_at: null });
    expect(delivery(done, 'completed')!.last_error).toMatch(/redirects are not followed/);
    expect(hooks.received).toHaveLength(ATTEMPTS);
    expect(target.received).toHaveLength(0);
  });

  it('stops retrying when the receiver answers 410 Gone', async () => {
    const hooks = await receiver(() => ({ status: 410 }));
    const job = await submit({ prompt: 'unsubscribed', img_size: 64, webhook: { url: hooks.url } });
    await until(() => getJob(job.id), (j) => delivery(j, 'completed')?.state === 'gone');
    // Longer than the whole retry schedule: no further attempt comes.
    await new Promise((r) => setTimeout(r, 250 * ATTEMPTS * 1.3 + 500));
    const after = await getJob(job.id);
    expect(delivery(after, 'completed')).toMatchObject({ state: 'gone', attempts: 1, last_status_code: 410 });
    expect(hooks.received).toHaveLength(1);
  });

  it("waits as long as a 429's Retry-After asks before the next attempt", async () => {
    const hooks = await receiver((_hook, index) => (index === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const job = await submit({ prompt: 'slow down', img_size: 64, webhook: { url: hooks.url } });
    await hooks.waitFor(1);
    const waiting = await until(() => getJob(job.id), (j) => delivery(j, 'completed')?.state === 'retrying');
    const d = delivery(waiting, 'completed')!;
    expect(d.last_status_code).toBe(429);
    expect(Date.parse(d.next_attempt_at) - Date.parse(d.last_attempt_at)).toBeGreaterThanOrEqual(1000);
    const [first, second] = await hooks.waitFor(2);
    // The schedule alone would have retried after ~250 ms.
    expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(950);
  });
});

describe('events of jobs that do not succeed', () => {
  it('sends job.canceled with status canceled for a canceled running job', async () => {
    const hooks = await receiver();
    const job = await submit({ prompt: 'stop me', img_size: 512, num_inference_steps: 900, scheduler: 'ddim', webhook: { url: hooks.url } });
    await until(() => getJob(job.id), (j) => j.status === 'running' && (j.progress?.step ?? 0) >= 2);
    const cancel = await fetch(`${base}/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    expect([200, 202], JSON.stringify(await cancel.clone().json())).toContain(cancel.status);
    const [hook] = await hooks.waitFor(1);
    const message = verify(hook!);
    expect(message.type).toBe('job.canceled');
    expect(message.data).toMatchObject({ id: job.id, status: 'canceled', error: { code: 'canceled' } });
  });

  it('sends job.failed with the error code for a job past its deadline', async () => {
    const hooks = await receiver();
    const job = await submit({ prompt: 'too slow', img_size: 512, num_inference_steps: 900, scheduler: 'ddim', timeout_s: 1, webhook: { url: hooks.url } });
    const [hook] = await hooks.waitFor(1);
    const message = verify(hook!);
    expect(message.type).toBe('job.failed');
    expect(message.data).toMatchObject({ id: job.id, status: 'failed', error: { code: 'timeout' } });
    expect((await pollJob(base, job.id)).attempts.made).toBe(1);
  });
});
