import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { startStack, type TestStack } from './helpers/stack.js';
import { startReceiver, until, type Receiver } from './helpers/webhook-receiver.js';

/**
 * The SSRF guard with no allow-list: literal internal addresses are refused when the job is
 * submitted; a name that resolves to one (localhost) is refused when the notifier connects.
 */
let stack: TestStack;
let dir: string;
let hooks: Receiver;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-ssrf-'));
  hooks = await startReceiver();
  stack = await startStack({
    MODEL_DIR: inject('tinyModelDir'),
    STORAGE_LOCAL_DIR: dir,
    DEFAULT_STEPS: '2',
    WEBHOOK_SECRETS: `whsec_${randomBytes(32).toString('base64')}`,
    WEBHOOK_RETRY_SCHEDULE: '0,100ms,100ms',
  });
});
afterAll(async () => {
  await stack?.close();
  await hooks?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const post = (webhook: unknown) =>
  fetch(`${stack.api.url}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'hook', img_size: 64, webhook }),
  });

it.each([
  ['http://10.0.0.1/hook', /private/],
  ['http://169.254.169.254/latest/meta-data/', /link-local/],
  ['http://127.0.0.1:9/hook', /loopback/],
  ['http://[::1]:9/hook', /loopback/],
  ['http://[::ffff:10.0.0.1]/hook', /private/],
  ['http://100.64.1.1/hook', /carrier-grade NAT/],
  ['ftp://example.com/hook', /http or https/],
  ['not a url', /http or https/],
])('refuses %s at submission, naming webhook.url, and queues nothing', async (url, why) => {
  const before = await stack.queue.count();
  const res = await post({ url });
  expect(res.status).toBe(400);
  const error = ((await res.json()) as any).error;
  expect(error.field).toBe('webhook.url');
  expect(error.message).toMatch(why);
  expect(await stack.queue.count()).toBe(before);
});

it('names unknown webhook fields and bad event names', async () => {
  const extra = await post({ url: 'https://example.com/h', secret: 'x' });
  expect(((await extra.json()) as any).error.field).toBe('webhook.secret');
  const event = await post({ url: 'https://example.com/h', events: ['finished'] });
  expect(((await event.json()) as any).error.field).toBe('webhook.events.0');
});

it('refuses at connect time a name that resolves to loopback (localhost), and records why', async () => {
  const url = `http://localhost:${hooks.port}/hooks/sd`;
  const res = await post({ url });
  expect(res.status).toBe(202);
  const job = (await res.json()) as any;
  const done = await until(
    async () => (await (await fetch(`${stack.api.url}/v1/jobs/${job.id}`)).json()) as any,
    (j) => j.webhook.deliveries[0]?.state === 'refused',
  );
  expect(done.status).toBe('succeeded');
  expect(done.webhook.deliveries[0]).toMatchObject({ event: 'completed', attempts: 1, last_status_code: null });
  expect(done.webhook.deliveries[0].last_error).toMatch(/localhost resolves to (127\.0\.0\.1|::1) \(loopback address\)/);
  expect(hooks.received).toHaveLength(0);
});
