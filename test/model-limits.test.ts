import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { startStack, type TestStack } from './helpers/stack.js';

/**
 * A model exported with static spatial shapes takes one size only. The API reads that from the
 * export at boot and rejects other sizes with 400 before anything is queued — with or without a
 * worker running, so defaults and size rules never depend on whether one has started.
 */
let dir: string;
let stack: TestStack;
let idle: TestStack;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-fixed-'));
  await writeTinyModel(path.join(dir, 'fixed-sd'), { fixedSize: 64 });
  stack = await startStack({ MODEL_DIR: path.join(dir, 'fixed-sd'), STORAGE_LOCAL_DIR: path.join(dir, 'images'), DEFAULT_STEPS: '2' });
  idle = await startStack({ MODEL_DIR: path.join(dir, 'fixed-sd'), STORAGE_LOCAL_DIR: path.join(dir, 'images'), DEFAULT_STEPS: '2' }, { worker: false });
});
afterAll(async () => {
  await stack?.close();
  await idle?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const post = (body: unknown) =>
  fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

it('rejects a size the fixed-size export cannot take, naming the field', async () => {
  for (const [body, field] of [
    [{ prompt: 'x', img_size: 128 }, 'img_size'],
    [{ prompt: 'x', width: 64, height: 72 }, 'height'],
  ] as const) {
    const res = await post(body);
    expect(res.status).toBe(400);
    const error = ((await res.json()) as any).error;
    expect(error.field).toBe(field);
    expect(error.message).toMatch(/must be 64/);
  }
  expect(await stack.queue.count()).toBe(0);
});

it('defaults to the export size and runs it', async () => {
  const res = await post({ prompt: 'fixed' });
  expect(res.status).toBe(202);
  const job = (await res.json()) as any;
  expect([job.input.width, job.input.height]).toEqual([64, 64]);
});

it('knows the export before any worker has run: same default, same size rule', async () => {
  const post = (body: unknown) =>
    fetch(`${idle.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const job = (await (await post({ prompt: 'no worker yet' })).json()) as any;
  expect([job.input.width, job.input.height]).toEqual([64, 64]);
  const refused = await post({ prompt: 'x', img_size: 512 });
  expect(refused.status).toBe(400);
  expect(((await refused.json()) as any).error).toMatchObject({ field: 'img_size', message: expect.stringMatching(/must be 64/) });
  expect(await idle.queue.count()).toBe(1);
});
