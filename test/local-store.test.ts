import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { LocalImageStore } from '../shared/storage/index.js';

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-local-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

it('stores, overwrites on retry and reads back', async () => {
  const store = new LocalImageStore(dir);
  await store.check();
  await store.put('jobs/abc/0.png', Buffer.from('first'), 'image/png');
  await store.put('jobs/abc/0.png', Buffer.from('second'), 'image/png');
  const object = await store.get('jobs/abc/0.png');
  expect(object?.contentLength).toBe(6);
  expect(await text(object!.body)).toBe('second');
  expect(await fs.readdir(path.join(dir, 'jobs/abc'))).toEqual(['0.png']);
  expect(await store.get('jobs/abc/1.png')).toBeNull();
});

it('refuses keys that could leave its folder', async () => {
  const store = new LocalImageStore(dir);
  for (const key of ['../etc/passwd', 'jobs/../../x', '/abs', 'jobs//x']) {
    await expect(store.put(key, Buffer.from('x'), 'image/png'), key).rejects.toThrow(/unsafe storage key/);
  }
});
