import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { JobListSchema } from '../api/response-schemas.js';
import { startStack, type TestStack } from './helpers/stack.js';

/** GET /v1/jobs: the caller's own jobs, newest first, by status, a page at a time. */
const KEY_A = 'lister-alpha-0123456789abcdef';
const KEY_B = 'lister-bravo-0123456789abcdef';
const as = (key: string) => ({ authorization: `Bearer ${key}` });
let stack: TestStack;
let dir: string;
const mine: string[] = [];
const theirs: string[] = [];
/** queue_position as each POST answered it. */
const positions: number[] = [];

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-listing-'));
  stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, API_KEYS: `${KEY_A},${KEY_B}` }, { worker: false, notifier: false });
  const submit = async (key: string, prompt: string) => {
    const res = await fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { ...as(key), 'content-type': 'application/json' }, body: JSON.stringify({ prompt, img_size: 64 }) });
    expect(res.status).toBe(202);
    const job = (await res.json()) as { id: string; queue_position: number };
    positions.push(job.queue_position);
    return job.id;
  };
  for (let i = 0; i < 5; i++) mine.push(await submit(KEY_A, `mine ${i}`));
  for (let i = 0; i < 2; i++) theirs.push(await submit(KEY_B, `theirs ${i}`));
});
afterAll(async () => {
  await stack?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const list = async (key: string, query = '') => {
  const res = await fetch(`${stack.api.url}/v1/jobs${query}`, { headers: as(key) });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
};

describe('POST /v1/jobs', () => {
  it('answers each job with its real place in line (no worker runs here)', () => {
    expect(positions).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });
});

describe('GET /v1/jobs', () => {
  it("lists the caller's jobs only, newest first", async () => {
    const { status, body } = await list(KEY_A);
    expect(status).toBe(200);
    expect(() => JobListSchema.parse(body)).not.toThrow();
    expect(body.jobs.map((j: { id: string }) => j.id)).toEqual([...mine].reverse());
    expect(body.next_cursor).toBeNull();
    expect((await list(KEY_B)).body.jobs.map((j: { id: string }) => j.id)).toEqual([...theirs].reverse());
  });

  it('pages with a cursor: every job once, in order', async () => {
    const seen: string[] = [];
    let query = '?limit=2';
    for (let page = 0; page < 5; page++) {
      const { body } = await list(KEY_A, query);
      seen.push(...body.jobs.map((j: { id: string }) => j.id));
      if (body.next_cursor === null) break;
      expect(body.jobs).toHaveLength(2);
      query = `?limit=2&cursor=${body.next_cursor}`;
    }
    expect(seen).toEqual([...mine].reverse());
  });

  it('filters by status', async () => {
    await fetch(`${stack.api.url}/v1/jobs/${mine[1]}/cancel`, { method: 'POST', headers: as(KEY_A) });
    expect((await list(KEY_A, '?status=canceled')).body.jobs.map((j: { id: string }) => j.id)).toEqual([mine[1]]);
    expect((await list(KEY_A, '?status=queued')).body.jobs).toHaveLength(4);
    expect((await list(KEY_A, '?status=queued,canceled')).body.jobs).toHaveLength(5);
    expect((await list(KEY_A, '?status=succeeded')).body).toEqual({ jobs: [], next_cursor: null });
  });

  it('refuses a bad parameter by name', async () => {
    for (const [query, field] of [
      ['?status=done', 'status'],
      ['?limit=0', 'limit'],
      ['?limit=101', 'limit'],
      ['?limit=0x10', 'limit'],
      ['?limit=%2B5', 'limit'],
      ['?cursor=not-a-cursor!', 'cursor'],
      [`?cursor=${Buffer.from('1:../../etc').toString('base64url')}`, 'cursor'],
      ['?sort=asc', 'sort'],
      ['?__proto__=1', '__proto__'],
      ['?limit=1&limit=2', 'limit'],
    ] as const) {
      const { status, body } = await list(KEY_A, query);
      expect(status, query).toBe(400);
      expect(body.error.field, query).toBe(field);
    }
  });
});
