import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { startApi, type RunningApi } from '../api/server.js';
import { loadConfig } from '../shared/config.js';
import { silentLogger } from './helpers/stack.js';

/** With Redis unreachable the API answers 503 at once instead of hanging the client. */
let api: RunningApi;

beforeAll(async () => {
  const config = loadConfig({
    PORT: '0',
    MODEL_DIR: inject('tinyModelDir'),
    // Port 1 on loopback: nothing listens, connections are refused.
    REDIS_URL: 'redis://127.0.0.1:1',
    STORAGE_LOCAL_DIR: '/tmp/sdjobs-redis-down',
  });
  api = await startApi(config, silentLogger);
});
afterAll(async () => {
  await api?.close();
});

it('answers POST /v1/jobs with 503 queue_unavailable', async () => {
  const res = await fetch(`${api.url}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'a cat' }),
    // A hang fails the test instead of waiting for vitest's timeout.
    signal: AbortSignal.timeout(5000),
  });
  expect(res.status).toBe(503);
  expect(res.headers.get('retry-after')).toBe('1');
  expect(((await res.json()) as any).error.code).toBe('queue_unavailable');
});

it('answers GET /v1/jobs/:id and the sync endpoint with 503 too, and readyz says why', async () => {
  const get = await fetch(`${api.url}/v1/jobs/abc`, { signal: AbortSignal.timeout(5000) });
  expect(get.status).toBe(503);
  const sync = await fetch(`${api.url}/dreambooth?prompt=x&img_size=64`, { signal: AbortSignal.timeout(5000) });
  expect(sync.status).toBe(503);
  const ready = await fetch(`${api.url}/readyz`, { signal: AbortSignal.timeout(5000) });
  expect(ready.status).toBe(503);
  const body = (await ready.json()) as any;
  expect(body.checks.redis.ok).toBe(false);
  expect(body.checks.storage.ok).toBe(true);
});
