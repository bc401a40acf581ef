import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BullJobQueue } from '../shared/job-queue.js';
import type { JobPayload } from '../shared/job-schema.js';
import { BullQueueLoad } from '../shared/queue-load.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { createProcessor, JobFailure } from '../worker/processor.js';
import type { Pipeline } from '../worker/pipeline/types.js';
import { dropTestQueue } from './helpers/queue-teardown.js';
import { silentLogger, startStack, type TestStack } from './helpers/stack.js';
import { startReceiver, until, type Receiver } from './helpers/webhook-receiver.js';
import { jobPayload } from './helpers/job-payload.js';

/**
 * `ttl_s`: a job still queued past it ends `expired` — a terminal status of its own, with a
 * webhook event of its own — never runs, and stops counting as load for the autoscaler and KEDA.
 */
const payload = (extra: Partial<JobPayload> = {}): JobPayload => jobPayload({ prompt: 'late', width: 64, height: 64, guidanceScale: 7.5, model: 'tiny', ...extra });

describe('the queue and the load', () => {
  const prefix = `test-expiry-${randomUUID().slice(0, 8)}`;
  const redis = createRedis('redis://127.0.0.1:6379', 'worker');
  const queue = new BullJobQueue({ connection: redis, prefix, jobs: { attempts: 1, backoffMs: 1, keepAgeS: 600, keepCount: 100 } });
  const load = new BullQueueLoad(redis, prefix);
  afterAll(async () => {
    await queue.close();
    await load.close();
    await dropTestQueue(new Queue(GENERATE_QUEUE, { connection: redis, prefix }), redis, prefix);
  });

  it('ends a queued job past its ttl_s as expired, and the load no longer counts it', async () => {
    const late = await queue.enqueue(payload({ ttlS: 1, expiresAt: Date.now() - 1 }));
    const onTime = await queue.enqueue(payload({ ttlS: 3600, expiresAt: Date.now() + 3_600_000 }));
    const plain = await queue.enqueue(payload());
    // The load read is what the autoscaler and GET /v1/queue see: it sweeps first.
    const seen = await load.read();
    expect(seen.waiting).toBe(2);
    expect(seen.load).toBe(2);
    const expired = await queue.get(late.id);
    expect(expired).toMatchObject({ status: 'expired', error: { code: 'expired' } });
    expect(expired?.finishedAt).not.toBeNull();
    expect((await queue.get(onTime.id))?.status).toBe('queued');
    expect((await queue.get(plain.id))?.status).toBe('queued');
  });

  it('ends it as soon as someone reads it, sweep or not', async () => {
    const job = await queue.enqueue(payload({ ttlS: 1, expiresAt: Date.now() + 300 }));
    await new Promise((r) => setTimeout(r, 400));
    expect((await queue.get(job.id))?.status).toBe('expired');
  });
});

describe('a worker', () => {
  it('never runs an expired job, even one it was handed', async () => {
    let generated = 0;
    const pipeline = {
      capabilities: { name: 'fake', sizeMultiple: 8, minSize: 8, maxSize: 64, defaultSize: 64, defaultScheduler: 'DDIMScheduler', dtype: 'float32' },
      generate: async () => {
        generated += 1;
        throw new Error('must not run');
      },
      release: async () => undefined,
    } satisfies Pipeline;
    const processor = createProcessor({ pipeline, store: { kind: 'none', put: async () => {}, get: async () => null, check: async () => {} }, logger: silentLogger, workerId: 'w' });
    const run = processor({ id: 'x', data: payload({ ttlS: 1, expiresAt: Date.now() - 1 }), attemptsMade: 0, updateProgress: async () => {} });
    await expect(run).rejects.toBeInstanceOf(JobFailure);
    await expect(run).rejects.toMatchObject({ code: 'expired', retryable: false });
    expect(generated).toBe(0);
  });
});

describe('through the API', () => {
  let stack: TestStack;
  let dir: string;
  let hooks: Receiver;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-expiry-'));
    hooks = await startReceiver();
    stack = await startStack(
      {
        MODEL_DIR: inject('tinyModelDir'),
        STORAGE_LOCAL_DIR: dir,
        WEBHOOK_SECRETS: `whsec_${randomBytes(32).toString('base64')}`,
        WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
      },
      { worker: false },
    );
  });
  afterAll(async () => {
    await stack?.close();
    await hooks?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('shows ttl_s and expires_at, ends the job expired, and sends job.expired', async () => {
    const res = await fetch(`${stack.api.url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'nobody ran me', img_size: 64, ttl_s: 1, webhook: { url: hooks.url } }),
    });
    expect(res.status).toBe(202);
    const job = (await res.json()) as Record<string, any>;
    expect(job.input.ttl_s).toBe(1);
    // Counted from when the API took the request, a moment before the queue stamped created_at.
    const ttlMs = Date.parse(job.expires_at) - Date.parse(job.created_at);
    expect(ttlMs).toBeGreaterThan(900);
    expect(ttlMs).toBeLessThanOrEqual(1000);
    // No worker runs, nobody reads it: the API's own sweep ends it.
    const [hook] = await hooks.waitFor(1);
    const message = JSON.parse(hook!.body);
    expect(message.type).toBe('job.expired');
    expect(message.data).toMatchObject({ id: job.id, status: 'expired', error: { code: 'expired' } });
    const queueNow = (await (await fetch(`${stack.api.url}/v1/queue`)).json()) as Record<string, number>;
    expect(queueNow.load).toBe(0);
    const bad = await fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', ttl_s: 0 }) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error.field).toBe('ttl_s');
    const events = await until(
      async () => (await fetch(`${stack.api.url}/v1/jobs/${job.id}/events`)).text(),
      (text) => text.includes('event: expired'),
    );
    expect(events).toMatch(/event: expired/);
  });
});
