import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { startStack, type TestStack } from './helpers/stack.js';
import { startReceiver, until, type Receiver } from './helpers/webhook-receiver.js';

/**
 * A delivery that gave up can be sent again on request (same webhook-id, same body), and every
 * attempt — status, error, time — stays visible in the job's delivery history.
 */
let stack: TestStack;
let dir: string;
let hooks: Receiver;
let receiverUp = false;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-redeliver-'));
  hooks = await startReceiver(() => ({ status: receiverUp ? 204 : 500 }));
  stack = await startStack({
    MODEL_DIR: inject('tinyModelDir'),
    STORAGE_LOCAL_DIR: dir,
    DEFAULT_STEPS: '2',
    WEBHOOK_SECRETS: `whsec_${randomBytes(32).toString('base64')}`,
    WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
    WEBHOOK_RETRY_SCHEDULE: '0,50ms',
  });
});
afterAll(async () => {
  await stack?.close();
  await hooks?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const getJob = async (id: string) => (await (await fetch(`${stack.api.url}/v1/jobs/${id}`)).json()) as Record<string, any>;
const redeliver = (id: string, body?: unknown) =>
  fetch(`${stack.api.url}/v1/jobs/${id}/webhooks/redeliver`, {
    method: 'POST',
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });

it('sends an exhausted delivery again and keeps each attempt with its status and time', async () => {
  const created = await fetch(`${stack.api.url}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'a stubborn receiver', img_size: 64, webhook: { url: hooks.url } }),
  });
  const { id } = (await created.json()) as { id: string };
  const exhausted = await until(() => getJob(id), (j) => j.webhook?.deliveries[0]?.state === 'exhausted');
  const first = exhausted.webhook.deliveries[0];
  expect(first.history.map((a: any) => [a.status_code, a.state])).toEqual([
    [500, 'retrying'],
    [500, 'exhausted'],
  ]);
  for (const attempt of first.history) expect(Date.parse(attempt.at)).toBeGreaterThan(Date.now() - 60_000);

  // Wrong requests are named.
  expect((await redeliver(id, { event: 'nope' })).status).toBe(400);
  expect(((await (await redeliver(id, { event: 'started' })).json()) as any).error.field).toBe('event');
  expect(((await (await redeliver(id, { extra: 1 })).json()) as any).error.field).toBe('extra');

  receiverUp = true;
  const answer = await redeliver(id);
  expect(answer.status).toBe(202);
  // The answer shows the delivery as it stands when read: queued again, or already delivered by a
  // notifier quicker than the answer.
  const resent = ((await answer.json()) as any).webhook.deliveries[0];
  expect(resent.redeliveries).toBe(1);
  expect(['pending', 'delivered']).toContain(resent.state);
  const delivered = await until(() => getJob(id), (j) => j.webhook.deliveries[0].state === 'delivered');
  const history = delivered.webhook.deliveries[0].history;
  expect(history.map((a: any) => [a.status_code, a.state])).toEqual([
    [500, 'retrying'],
    [500, 'exhausted'],
    [204, 'delivered'],
  ]);
  expect(delivered.webhook.deliveries[0].redeliveries).toBe(1);
  // The receiver saw the same message each time: one webhook-id, one body.
  expect(new Set(hooks.received.map((h) => h.headers['webhook-id'])).size).toBe(1);
  expect(new Set(hooks.received.map((h) => h.body)).size).toBe(1);
  expect(hooks.received).toHaveLength(3);

  const again = await redeliver(id);
  expect(again.status).toBe(409);
  expect(((await again.json()) as any).error.code).toBe('delivery_not_failed');
});

it('answers 409 for a job without a webhook and 404 for an unknown job', async () => {
  const created = await fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'no hook', img_size: 64 }) });
  const { id } = (await created.json()) as { id: string };
  const none = await redeliver(id);
  expect(none.status).toBe(409);
  expect(((await none.json()) as any).error.code).toBe('no_webhook');
  expect((await redeliver('no-such-job')).status).toBe(404);
});
