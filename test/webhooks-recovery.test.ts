import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { startNotifier } from '../notifier/notifier.js';
import { pollJob, silentLogger, startStack, type TestStack } from './helpers/stack.js';
import { startReceiver, type Receiver } from './helpers/webhook-receiver.js';

/**
 * Nothing lost between "job finished" and "message enqueued": jobs finish while no notifier runs
 * (as if it, or the process that would have enqueued, had crashed); a notifier started later finds
 * them in the queue's finished sets and delivers their events.
 */
const secret = `whsec_${randomBytes(32).toString('base64')}`;
let stack: TestStack;
let dir: string;
let hooks: Receiver;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-recovery-'));
  hooks = await startReceiver();
  stack = await startStack(
    {
      MODEL_DIR: inject('tinyModelDir'),
      STORAGE_LOCAL_DIR: dir,
      DEFAULT_STEPS: '2',
      WEBHOOK_SECRETS: secret,
      WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
      WEBHOOK_RETRY_SCHEDULE: '0,100ms',
    },
    { notifier: false },
  );
});
afterAll(async () => {
  await stack?.close();
  await hooks?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

it('delivers the events of jobs that finished while no notifier ran, once each', async () => {
  const ids: string[] = [];
  for (const prompt of ['while away one', 'while away two']) {
    const res = await fetch(`${stack.api.url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, img_size: 64, webhook: { url: hooks.url } }),
    });
    ids.push(((await res.json()) as any).id);
  }
  for (const id of ids) expect((await pollJob(stack.api.url, id)).status).toBe('succeeded');
  // Nobody enqueued anything for them.
  for (const id of ids) expect(((await (await fetch(`${stack.api.url}/v1/jobs/${id}`)).json()) as any).webhook.deliveries).toEqual([]);
  expect(hooks.received).toHaveLength(0);

  const notifier = await startNotifier(stack.config, silentLogger);
  try {
    const received = await hooks.waitFor(2);
    const delivered = received.map((h) => (new Webhook(secret).verify(h.body, h.headers) as any).data.id).sort();
    expect(delivered).toEqual([...ids].sort());
    // Another sweep over the same window enqueues the same messages again, which changes nothing.
    await notifier.sweep();
    await notifier.sweep();
    await new Promise((r) => setTimeout(r, 300));
    expect(hooks.received).toHaveLength(2);
  } finally {
    await notifier.close();
  }
});
