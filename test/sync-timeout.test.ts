import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { startStack, type TestStack } from './helpers/stack.js';

/** No worker is running: the synchronous wrapper gives up after SYNC_TIMEOUT_S and says where to poll. */
let stack: TestStack;
let dir: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-sync-'));
  stack = await startStack(
    { MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, SYNC_TIMEOUT_S: '1' },
    { worker: false },
  );
});
afterAll(async () => {
  await stack?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

it('answers 202 with the job location, and the job stays queued for polling', async () => {
  const res = await fetch(`${stack.api.url}/dreambooth?prompt=late&img_size=64`);
  expect(res.status).toBe(202);
  const job = (await res.json()) as any;
  expect(res.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
  expect(job.status).toBe('queued');
  expect(job.queue_position).toBe(0);
  const again = (await (await fetch(new URL(res.headers.get('location') as string, stack.api.url))).json()) as any;
  expect(again.status).toBe('queued');
  expect(await stack.queue.getWaitingCount()).toBe(1);
});

it('reports queue positions in order', async () => {
  const ids: string[] = [];
  for (const prompt of ['one', 'two', 'three']) {
    const res = await fetch(`${stack.api.url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, img_size: 64 }),
    });
    ids.push(((await res.json()) as any).id);
  }
  const positions = [];
  for (const id of ids) positions.push(((await (await fetch(`${stack.api.url}/v1/jobs/${id}`)).json()) as any).queue_position);
  // One job from the first test is ahead of these.
  expect(positions).toEqual([1, 2, 3]);
});
