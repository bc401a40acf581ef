import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createMetrics } from '../api/metrics.js';
import type { FinishedJob, FinishedListener } from '../shared/queue-monitor.js';
import { WorkerRegistry, type WorkerRecord } from '../shared/worker-registry.js';
import type { QueueLoad } from '../shared/queue-load.js';
import { encodeFailure } from '../shared/job-queue.js';
import { WEBHOOK_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';

/** Reads one sample's value from Prometheus text: `name{labels} value`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[4]);
  }
  return undefined;
}

const job = (over: Partial<FinishedJob>): FinishedJob => ({
  id: 'j1',
  outcome: 'succeeded',
  errorCode: null,
  model: 'tiny-sd',
  steps: 4,
  images: 2,
  workerId: 'w1',
  createdAt: 1_000,
  startedAt: 3_000,
  finishedAt: 4_000,
  timingsMs: { unet: 400, total: 900 },
  ...over,
});

describe('createMetrics (fed by fake sources)', () => {
  it('labels jobs, durations, queue counts, load and workers by model', async () => {
    let listener: FinishedListener = () => undefined;
    const metrics = createMetrics({
      defaultMetrics: false,
      models: [{ name: 'base', queue: 'generate' }, { name: 'dog', queue: 'generate.dog' }],
      monitor: {
        counts: async () => ({}),
        countsByQueue: async () => new Map([['generate', { waiting: 2 }], ['generate.dog', { waiting: 5 }]]),
      },
      loads: { readAll: async () => new Map([['base', { load: 3 } as QueueLoad], ['dog', { load: 6 } as QueueLoad]]) },
      workers: { list: async () => [{ state: 'busy', model: 'dog' } as WorkerRecord] },
      jobEvents: {
        onJobFinished: (fn) => {
          listener = fn;
          return () => undefined;
        },
      },
    });
    listener(job({ model: 'dog' }));
    const { body } = await metrics.render();
    expect(sample(body, 'sdjobs_jobs_finished_total', { outcome: 'succeeded', model: 'dog' })).toBe(1);
    expect(sample(body, 'sdjobs_jobs_finished_total', { outcome: 'succeeded', model: 'base' })).toBe(0);
    expect(sample(body, 'sdjobs_job_run_seconds_count', { outcome: 'succeeded', model: 'dog' })).toBe(1);
    expect(sample(body, 'sdjobs_images_generated_total', { model: 'dog' })).toBe(2);
    expect(sample(body, 'sdjobs_jobs', { state: 'waiting', model: 'base' })).toBe(2);
    expect(sample(body, 'sdjobs_jobs', { state: 'waiting', model: 'dog' })).toBe(5);
    expect(sample(body, 'sdjobs_queue_load', { model: 'dog' })).toBe(6);
    expect(sample(body, 'sdjobs_workers', { state: 'busy', model: 'dog' })).toBe(1);
    expect(sample(body, 'sdjobs_workers', { state: 'busy', model: 'base' })).toBe(0);
  });

  it('turns finished jobs into outcome counters, duration histograms and an image counter', async () => {
    let listener: FinishedListener = () => undefined;
    const metrics = createMetrics({
      defaultMetrics: false,
      monitor: { counts: async () => ({ waiting: 3, active: 1, failed: 0 }) },
      jobEvents: {
        onJobFinished: (fn) => {
          listener = fn;
          return () => undefined;
        },
      },
    });
    listener(job({}));
    listener(job({ id: 'j2', outcome: 'failed', errorCode: 'internal_error', images: 0, timingsMs: null, startedAt: 1_500, finishedAt: 1_600 }));
    listener(job({ id: 'j3', outcome: 'canceled', errorCode: 'canceled', images: 0, startedAt: null, finishedAt: null, timingsMs: null }));
    const { body, contentType } = await metrics.render();
    expect(contentType).toMatch(/^text\/plain/);
    expect(sample(body, 'sdjobs_jobs_finished_total', { outcome: 'succeeded' })).toBe(1);
    expect(sample(body, 'sdjobs_jobs_finished_total', { outcome: 'failed' })).toBe(1);
    expect(sample(body, 'sdjobs_jobs_finished_total', { outcome: 'canceled' })).toBe(1);
    expect(sample(body, 'sdjobs_images_generated_total')).toBe(2);
    // Queue wait: 2 s and 0.5 s (the canceled job never started).
    expect(sample(body, 'sdjobs_job_queue_wait_seconds_count')).toBe(2);
    expect(sample(body, 'sdjobs_job_queue_wait_seconds_sum')).toBeCloseTo(2.5);
    expect(sample(body, 'sdjobs_job_run_seconds_sum', { outcome: 'succeeded' })).toBeCloseTo(1);
    expect(sample(body, 'sdjobs_job_run_seconds_count', { outcome: 'failed' })).toBe(1);
    // Per step: 400 ms of UNet over 4 steps.
    expect(sample(body, 'sdjobs_job_step_seconds_sum')).toBeCloseTo(0.1);
    expect(sample(body, 'sdjobs_job_step_seconds_bucket', { le: '0.1' })).toBe(1);
    expect(sample(body, 'sdjobs_jobs', { state: 'waiting' })).toBe(3);
    expect(sample(body, 'sdjobs_jobs', { state: 'active' })).toBe(1);
    expect(sample(body, 'sdjobs_queue_up')).toBe(1);
    expect(body).toMatch(/# HELP sdjobs_images_generated_total .*rate\(/);
    // No worker source, no workers gauge (rather than a made-up one); no process metrics asked for.
    expect(body).not.toMatch(/sdjobs_workers/);
    expect(body).not.toMatch(/process_cpu/);
  });

  it('still answers a scrape when Redis is down, saying so in sdjobs_queue_up', async () => {
    const metrics = createMetrics({
      defaultMetrics: false,
      monitor: {
        counts: async () => {
          throw new Error('ECONNREFUSED');
        },
      },
    });
    const { body } = await metrics.render();
    expect(sample(body, 'sdjobs_queue_up')).toBe(0);
    expect(sample(body, 'sdjobs_jobs', { state: 'waiting' })).toBeUndefined();
  });

  it('counts workers by state from the registry and webhook deliveries by outcome', async () => {
    let onDelivery: (outcome: string) => void = () => undefined;
    const metrics = createMetrics({
      defaultMetrics: false,
      workers: {
        list: async () =>
          ['busy', 'busy', 'ready', 'starting'].map((state, i) => ({ id: `w${i}`, state }) as Awaited<ReturnType<WorkerRegistry['list']>>[number]),
      },
      webhookEvents: {
        onWebhookFinished: (fn) => {
          onDelivery = fn;
          return () => undefined;
        },
      },
    });
    onDelivery('delivered');
    onDelivery('delivered');
    onDelivery('gone');
    const { body } = await metrics.render();
    expect(sample(body, 'sdjobs_workers', { state: 'busy' })).toBe(2);
    expect(sample(body, 'sdjobs_workers', { state: 'ready' })).toBe(1);
    expect(sample(body, 'sdjobs_workers', { state: 'draining' })).toBe(0);
    expect(sample(body, 'sdjobs_webhook_deliveries_total', { outcome: 'delivered' })).toBe(2);
    expect(sample(body, 'sdjobs_webhook_deliveries_total', { outcome: 'gone' })).toBe(1);
  });

  it('keeps one registry per instance, so two apps in one process do not clash', async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.observeWebhookDelivery('delivered');
    expect(sample((await a.render()).body, 'sdjobs_webhook_deliveries_total', { outcome: 'delivered' })).toBe(1);
    expect(sample((await b.render()).body, 'sdjobs_webhook_deliveries_total', { outcome: 'delivered' })).toBe(0);
    expect((await a.render()).body).toMatch(/process_cpu_user_seconds_total/);
  });
});

describe('GET /metrics on a running stack', () => {
  let stack: TestStack;
  let dir: string;
  let base: string;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-metrics-'));
    // No notifier: a stand-in consumes the webhook queue below.
    stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir }, { notifier: false });
    base = stack.api.url;
  });
  afterAll(async () => {
    await stack?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('counts a finished job, its images, its timings and the requests that made it', async () => {
    const res = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a metric fox', img_size: 64, num_inference_steps: 3, num_images: 2 }),
    });
    const { id } = (await res.json()) as { id: string };
    const done = await pollJob(base, id);
    expect(done.error).toBeNull();
    expect(done.status).toBe('succeeded');

    // The completion reaches the API through the queue's event stream: wait for it.
    let body = '';
    for (let i = 0; i < 100; i += 1) {
      body = await (await fetch(`${base}/metrics`)).text();
      if (sample(body, 'sdjobs_jobs_finished_total', { outcome: 'succeeded' }) === 1) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(sample(body, 'sdjobs_jobs_finished_total', { outcome: 'succeeded' })).toBe(1);
    expect(sample(body, 'sdjobs_images_generated_total')).toBe(2);
    expect(sample(body, 'sdjobs_job_queue_wait_seconds_count')).toBe(1);
    expect(sample(body, 'sdjobs_job_run_seconds_count', { outcome: 'succeeded' })).toBe(1);
    expect(sample(body, 'sdjobs_job_step_seconds_count')).toBe(1);
    expect(sample(body, 'sdjobs_job_step_seconds_sum')).toBeGreaterThan(0);
    expect(sample(body, 'sdjobs_jobs', { state: 'completed' })).toBe(1);
    expect(sample(body, 'sdjobs_jobs', { state: 'waiting' })).toBe(0);
    expect(sample(body, 'sdjobs_queue_up')).toBe(1);
    // Route patterns, not raw paths: one series for every job id.
    expect(sample(body, 'sdjobs_http_requests_total', { method: 'POST', route: '/v1/jobs', status: '202' })).toBe(1);
    expect(sample(body, 'sdjobs_http_requests_total', { method: 'GET', route: '/v1/jobs/:id', status: '200' })).toBeGreaterThanOrEqual(1);
    expect(body).not.toContain(id);
    expect(body).toMatch(/^process_resident_memory_bytes /m);
    expect(body).toMatch(/^nodejs_eventloop_lag_seconds /m);
  });

  it('shows heartbeating workers by state', async () => {
    const redis = createRedis(stack.config.redisUrl, 'worker');
    try {
      const registry = new WorkerRegistry(redis, stack.config.queuePrefix);
      const now = Date.now();
      const base_ = { slot: 'gpu0', currentJob: null, startedAt: now, lastSeenAt: now, jobsDone: 0, jobsFailed: 0, host: 'h', pid: 1, model: stack.config.model.name };
      await registry.put({ ...base_, id: 'w-busy', state: 'busy' }, 10_000);
      await registry.put({ ...base_, id: 'w-ready', state: 'ready' }, 10_000);
      const body = await (await fetch(`${base}/metrics`)).text();
      // The stack's own in-process worker heartbeats too (idle: ready).
      expect(sample(body, 'sdjobs_workers', { state: 'busy' })).toBe(1);
      expect(sample(body, 'sdjobs_workers', { state: 'ready' })).toBe(2);
      expect(sample(body, 'sdjobs_workers', { state: 'ready', model: stack.config.model.name })).toBe(2);
      await registry.remove('w-busy');
      await registry.remove('w-ready');
    } finally {
      await redis.quit();
    }
  });

  it("counts webhook deliveries as they end on the notifier's queue", async () => {
    // A stand-in notifier: one delivery succeeds, one is refused for good with a 410.
    const connection = createRedis(stack.config.redisUrl, 'worker');
    const queue = new Queue(WEBHOOK_QUEUE, { connection, prefix: stack.config.queuePrefix });
    const worker = new Worker(
      WEBHOOK_QUEUE,
      async (job) => {
        if (job.data.gone) throw new UnrecoverableError(encodeFailure('gone', 'the receiver answered 410'));
        return { statusCode: 204 };
      },
      { connection, prefix: stack.config.queuePrefix },
    );
    try {
      await queue.add('deliver', { gone: false }, { jobId: 'a.completed' });
      await queue.add('deliver', { gone: true }, { jobId: 'b.completed', attempts: 5 });
      let body = '';
      for (let i = 0; i < 100; i += 1) {
        body = await (await fetch(`${base}/metrics`)).text();
        if (sample(body, 'sdjobs_webhook_deliveries_total', { outcome: 'gone' }) === 1) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(sample(body, 'sdjobs_webhook_deliveries_total', { outcome: 'delivered' })).toBe(1);
      expect(sample(body, 'sdjobs_webhook_deliveries_total', { outcome: 'gone' })).toBe(1);
    } finally {
      await worker.close();
      await queue.obliterate({ force: true });
      await queue.close();
      await connection.quit();
    }
  });

  it('labels unknown paths as one route', async () => {
    await fetch(`${base}/no/such/path/123`);
    const body = await (await fetch(`${base}/metrics`)).text();
    expect(sample(body, 'sdjobs_http_requests_total', { method: 'GET', route: '(unmatched)', status: '404' })).toBe(1);
    expect(body).not.toContain('/no/such/path');
  });
});
