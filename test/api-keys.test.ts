import { Writable } from 'node:stream';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startApi } from '../api/server.js';
import { loadConfig } from '../shared/config.js';
import { startStack, type TestStack } from './helpers/stack.js';

/** API keys (who may see which job) and Idempotency-Key (a retried POST makes one job). */

const KEY_A = 'key-alpha-0123456789abcdef';
const KEY_B = 'key-bravo-0123456789abcdef';
let stack: TestStack;
let base: string;
let dir: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-keys-'));
  stack = await startStack(
    { MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, DEFAULT_STEPS: '2', API_KEYS: `${KEY_A},${KEY_B}` },
    { notifier: false },
  );
  base = stack.api.url;
});
afterAll(async () => {
  await stack?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

const as = (key: string | null, extra: Record<string, string> = {}) => ({ ...(key ? { authorization: `Bearer ${key}` } : {}), ...extra });
const post = (key: string | null, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}/v1/jobs`, { method: 'POST', headers: as(key, { 'content-type': 'application/json', ...headers }), body: JSON.stringify(body) });

describe('API keys', () => {
  it('answers 401 with a clear error for a missing, malformed or wrong key', async () => {
    const missing = await post(null, { prompt: 'x' });
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(((await missing.json()) as any).error).toMatchObject({ code: 'unauthorized', field: 'authorization' });
    const malformed = await fetch(`${base}/v1/jobs/x`, { headers: { authorization: `Basic ${KEY_A}` } });
    expect(malformed.status).toBe(401);
    expect(((await malformed.json()) as any).error.message).toMatch(/Bearer/);
    const wrong = await post('key-charlie-0123456789abcdef', { prompt: 'x' });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as any).error.message).toMatch(/not valid/);
    expect(await stack.queue.count()).toBe(0);
  });

  it('guards the synchronous routes too, and leaves health open', async () => {
    expect((await fetch(`${base}/dreambooth?prompt=x&img_size=64`)).status).toBe(401);
    expect((await fetch(`${base}/v1/generate?prompt=x&img_size=64`)).status).toBe(401);
    const ok = await fetch(`${base}/dreambooth?prompt=x&img_size=64`, { headers: as(KEY_A) });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toBe('image/png');
    await ok.arrayBuffer();
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });

  it("shows, cancels and streams a job only under the key that made it; another key gets 404", async () => {
    const created = await post(KEY_A, { prompt: 'mine', img_size: 64 });
    expect(created.status).toBe(202);
    const job = (await created.json()) as any;
    expect(JSON.stringify(job)).not.toMatch(/owner/);
    expect((await fetch(`${base}/v1/jobs/${job.id}`, { headers: as(KEY_A) })).status).toBe(200);
    const done = await (async () => {
      for (;;) {
        const j = (await (await fetch(`${base}/v1/jobs/${job.id}`, { headers: as(KEY_A) })).json()) as any;
        if (j.status === 'succeeded') return j;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    for (const [method, url] of [
      ['GET', `${base}/v1/jobs/${job.id}`],
      ['POST', `${base}/v1/jobs/${job.id}/cancel`],
      ['GET', `${base}/v1/jobs/${job.id}/events`],
      ['GET', `${base}${done.outputs.images[0].url}`],
    ] as const) {
      const other = await fetch(url, { method, headers: as(KEY_B) });
      expect(other.status, `${method} ${url}`).toBe(404);
      expect(((await other.json()) as any).error.code).toBe('job_not_found');
      expect((await fetch(url, { method, headers: as(null) })).status, `${method} ${url} without a key`).toBe(401);
    }
    const image = await fetch(`${base}${done.outputs.images[0].url}`, { headers: as(KEY_A) });
    expect(image.status).toBe(200);
    await image.arrayBuffer();
  });
});

describe('Idempotency-Key', () => {
  const body = { prompt: 'only once', img_size: 64, seed: 5 };

  it('returns the original job for the same key, and 409 for the same key with another body', async () => {
    const first = await post(KEY_A, body, { 'idempotency-key': 'order-1' });
    expect(first.status).toBe(202);
    const job = (await first.json()) as any;
    // Same body with its keys in another order is the same request.
    const again = await post(KEY_A, { seed: 5, img_size: 64, prompt: 'only once' }, { 'idempotency-key': 'order-1' });
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(((await again.json()) as any).id).toBe(job.id);
    const conflict = await post(KEY_A, { ...body, seed: 6 }, { 'idempotency-key': 'order-1' });
    expect(conflict.status).toBe(409);
    expect(((await conflict.json()) as any).error).toMatchObject({ code: 'idempotency_conflict', field: 'Idempotency-Key' });
    // Keys are scoped to the API key: another client's "order-1" is its own.
    const other = await post(KEY_B, body, { 'idempotency-key': 'order-1' });
    expect(other.status).toBe(202);
    expect(((await other.json()) as any).id).not.toBe(job.id);
  });

  it('makes one job of concurrent identical requests', async () => {
    const before = await stack.queue.getJobCountByTypes('waiting', 'active', 'completed', 'failed', 'delayed');
    const answers = await Promise.all(Array.from({ length: 8 }, () => post(KEY_A, { prompt: 'racing', img_size: 64 }, { 'idempotency-key': 'race-1' })));
    const ids = new Set<string>();
    for (const res of answers) {
      expect(res.status).toBe(202);
      ids.add(((await res.json()) as any).id);
    }
    expect(ids.size).toBe(1);
    expect(answers.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(7);
    const after = await stack.queue.getJobCountByTypes('waiting', 'active', 'completed', 'failed', 'delayed');
    expect(after - before).toBe(1);
  });

  it('rejects a malformed key', async () => {
    const res = await post(KEY_A, body, { 'idempotency-key': 'has spaces in it' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).error.field).toBe('Idempotency-Key');
  });
});

describe('open mode', () => {
  it('logs a warning at startup when no keys are configured, and refuses webhooks without secrets', async () => {
    const lines: string[] = [];
    const logger = pino(
      { level: 'warn' },
      new Writable({
        write(chunk, _enc, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    );
    const config = loadConfig({ PORT: '0', MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, QUEUE_PREFIX: `${stack.config.queuePrefix}-open` });
    const api = await startApi(config, logger);
    try {
      expect(lines.some((l) => /no API_KEYS configured/.test(l) && JSON.parse(l).level === 40)).toBe(true);
      const res = await fetch(`${api.url}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'x', webhook: { url: 'https://example.com/hook' } }),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as any).error.field).toBe('webhook');
    } finally {
      await api.close();
    }
  });
});
