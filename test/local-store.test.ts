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

it('fails its readiness check on a full disk, naming ENOSPC, and passes once there is room', async () => {
  const store = new LocalImageStore(dir);
  await store.check();
  // Writes to /dev/full fail with ENOSPC, as on a disk with no space left: the probe file points there.
  const probe = path.join(dir, `.write-probe-${process.pid}`);
  await fs.symlink('/dev/full', probe);
  await expect(store.check()).rejects.toThrow(/is not writable: ENOSPC: no space left on device/);
  await fs.rm(probe);
  await store.check();
  expect(await fs.readdir(dir)).toEqual([]);
});

it('names the system error of a failed write, and removes a job folder (again, harmlessly)', async () => {
  const store = new LocalImageStore(dir);
  await fs.writeFile(path.join(dir, 'jobs'), 'a file where a folder should be');
  await expect(store.put('jobs/abc/0.png', Buffer.from('x'), 'image/png')).rejects.toThrow(/could not write jobs\/abc\/0\.png under .*: (ENOTDIR|EEXIST)/);
  await fs.rm(path.join(dir, 'jobs'));
  await store.put('jobs/abc/0.png', Buffer.from('x'), 'image/png');
  await store.put('jobs/abcd/0.png', Buffer.from('x'), 'image/png');
  await store.deletePrefix('jobs/abc/');
  await store.deletePrefix('jobs/abc/');
  expect(await fs.readdir(path.join(dir, 'jobs'))).toEqual(['abcd']);
});
