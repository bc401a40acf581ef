import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { startReceiver, type Receiver } from './helpers/webhook-receiver.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';

/**
 * The job features on a model other than the default one, with its own queue: an in-process
 * worker holds the fine-tuned model only, so the default model's jobs wait (nobody takes them)
 * while the fine-tuned model's run. Server-sent events, webhooks, idempotency, cancel, ttl_s,
 * queue positions and the job listing all work per model.
 */
const TUNED = 'tuned';
let dir: string;
let stack: TestStack;
let base: string;
let receiver: Receiver;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-model-features-'));
  await writeTinyModel(path.join(dir, TUNED), { seed: 4242 });
  const catalogue = path.join(dir, 'models.json');
  fs.writeFileSync(
    catalogue,
    JSON.stringify({ models: [{ name: 'base', dir: inject('tinyModelDir') }, { name: TUNED, dir: path.join(dir, TUNED), trigger_words: ['unqtkn'] }] }),
  );
  receiver = await startReceiver();
  stack = await startStack(
    {
      MODELS_FILE: catalogue,
      STORAGE_LOCAL_DIR: path.join(dir, 'images'),
      DEFAULT_STEPS: '2',
      WEBHOOK_SECRETS: `whsec_${randomBytes(32).toString('base64')}`,
      WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
    },
    { workerModel: TUNED },
  );
  base = stack.api.url;
});
afterAll(async () => {
  await stack?.close();
  await receiver?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function post(body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Record<string, any>> {
  const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  expect(res.status).toBe(202);
  return (await res.json()) as Record<string, any>;
}
const get = async (id: string) => (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as Record<string, any>;

describe('job features on a model of its own queue', () => {
  it('counts queue positions per model, and a worker of one model never takes another model\'s job', async () => {
    const waiting = [await post({ prompt: 'a red fox' }), await post({ prompt: 'a blue fox' })];
    expect(waiting.map((j) => [j.model, j.routed_by, j.queue_position])).toEqual([
      ['base', 'default', 0],
      ['base', 'default', 1],
    ]);
    const tuned = await post({ prompt: 'unqtkn on a beach' });
    const done = await pollJob(base, tuned.id);
    expect([done.status, done.model]).toEqual(['succeeded', TUNED]);
    // The base jobs are still where they were: no worker of theirs runs.
    expect((await Promise.all(waiting.map((j) => get(j.id)))).map((j) => [j.status, j.queue_position])).toEqual([
      ['queued', 0],
      ['queued', 1],
    ]);
    const models = (await (await fetch(`${base}/v1/models`)).json()) as { models: Array<Record<string, any>> };
    expect(models.models.find((m) => m.name === 'base')?.load).toEqual({ queued: 2, running: 0, total: 2 });
    const queue = (await (await fetch(`${base}/v1/queue?model=base`)).json()) as Record<string, any>;
    expect([queue.model, queue.load, queue.waiting]).toEqual(['base', 2, 2]);
    const all = (await (await fetch(`${base}/v1/queue`)).json()) as Record<string, any>;
    expect(all.models.base.load).toBe(2);
    expect(all.models[TUNED].load).toBe(0);
    expect((await fetch(`${base}/v1/queue?model=nope`)).status).toBe(400);

    // Canceling a queued job of the model without a worker: it never runs, the next moves up.
    const cancel = await fetch(`${base}/v1/jobs/${waiting[0]!.id}/cancel`, { method: 'POST' });
    expect(cancel.status).toBe(200);
    expect((await get(waiting[0]!.id)).status).toBe('canceled');
    expect((await get(waiting[1]!.id)).queue_position).toBe(0);
    // Listed with the others, newest first, each with its model.
    const list = (await (await fetch(`${base}/v1/jobs?limit=3`)).json()) as { jobs: Array<Record<string, any>> };
    expect(list.jobs.map((j) => [j.id, j.model])).toEqual([
      [tuned.id, TUNED],
      [waiting[1]!.id, 'base'],
      [waiting[0]!.id, 'base'],
    ]);
  });

  it('expires a job of a model other than the default when its ttl_s runs out unrun', async () => {
    // The tuned worker is busy with a long job, so this one waits in the tuned queue. Four images
    // of 150 steps: still generating when it is canceled below, on a quiet machine too (one image
    // could end, and its upload finish the job, before the cancel).
    const long = await post({ prompt: 'unqtkn long', num_inference_steps: 150, img_size: 512, num_images: 4 });
    const short = await post({ prompt: 'unqtkn short', ttl_s: 1 });
    expect(short.model).toBe(TUNED);
    let ended = await get(short.id);
    for (let i = 0; i < 100 && ended.status === 'queued'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ended = await get(short.id);
    }
    expect([ended.status, ended.error?.code]).toEqual(['expired', 'expired']);
    // Still running: the long job was never the one that expired.
    expect((await get(long.id)).status).toBe('running');
    await fetch(`${base}/v1/jobs/${long.id}/cancel`, { method: 'POST' });
    expect((await pollJob(base, long.id)).status).toBe('canceled');
  });

  it('streams progress, signs a webhook and honours an Idempotency-Key for a routed job', async () => {
    const key = randomUUID();
    const first = await post({ prompt: 'photo of unqtkn dog having breakfast', webhook: { url: receiver.url } }, { 'Idempotency-Key': key });
    const again = await post({ prompt: 'photo of unqtkn dog having breakfast', webhook: { url: receiver.url } }, { 'Idempotency-Key': key });
    expect(again.id).toBe(first.id);
    expect([first.model, first.routed_by]).toEqual([TUNED, 'trigger word "unqtkn"']);
    const res = await fetch(`${base}/v1/jobs/${first.id}/events`, { headers: { accept: 'text/event-stream' } });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await res.text();
    const last = JSON.parse(
      text
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .at(-1)!
        .slice(6),
    ) as Record<string, any>;
    expect([last.status, last.model, last.routed_by]).toEqual(['succeeded', TUNED, 'trigger word "unqtkn"']);
    const hooks = await receiver.waitFor(1);
    const payload = JSON.parse(hooks[0]!.body) as Record<string, any>;
    expect(hooks[0]!.headers['webhook-signature']).toMatch(/^v1,/);
    expect([payload.type, payload.data.id, payload.data.model]).toEqual(['job.completed', first.id, TUNED]);
  });
});

describe('request checks against the routed model', () => {
  let idle: TestStack;
  let folder: string;
  beforeAll(async () => {
    folder = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-model-checks-'));
    // The fine-tune is a static 64 px export: it takes that size only; the base takes any.
    await writeTinyModel(path.join(folder, 'fixed'), { fixedSize: 64, seed: 4242 });
    const catalogue = path.join(folder, 'models.json');
    fs.writeFileSync(catalogue, JSON.stringify({ models: [{ name: 'base', dir: inject('tinyModelDir') }, { name: 'fixed', dir: path.join(folder, 'fixed'), trigger_words: ['sks'] }] }));
    idle = await startStack({ MODELS_FILE: catalogue, STORAGE_LOCAL_DIR: path.join(folder, 'images') }, { worker: false, notifier: false });
  });
  afterAll(async () => {
    await idle?.close();
    fs.rmSync(folder, { recursive: true, force: true });
  });

  it('checks sizes against the export the prompt routes to, and names the field', async () => {
    const submit = (body: Record<string, unknown>) =>
      fetch(`${idle.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const refused = await submit({ prompt: 'photo of sks dog', img_size: 128 });
    expect(refused.status).toBe(400);
    expect(JSON.stringify(await refused.json())).toMatch(/"field":"img_size"/);
    // The same request routed (or named) to the base model is fine.
    expect((await submit({ prompt: 'photo of a dog', img_size: 128 })).status).toBe(202);
    expect((await submit({ prompt: 'photo of sks dog', img_size: 128, model: 'base' })).status).toBe(202);
    // Without a size, each model's own default: 64 for the fixed export.
    const routed = (await (await submit({ prompt: 'photo of sks dog' })).json()) as Record<string, any>;
    expect([routed.model, routed.input.width, routed.input.height]).toEqual(['fixed', 64, 64]);
    const models = (await (await fetch(`${idle.api.url}/v1/models`)).json()) as { models: Array<Record<string, any>> };
    expect(models.models.map((m) => [m.name, m.capabilities.fixed_size])).toEqual([
      ['base', null],
      ['fixed', { width: 64, height: 64 }],
    ]);
  });
});
