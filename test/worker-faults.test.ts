import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../shared/config.js';
import { GENERATE_JOB, GENERATE_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { LocalImageStore, resultKey, S3ImageStore, type ImageStore } from '../shared/storage/index.js';
import { createJobRunner, type JobRunner } from '../worker/job-runner.js';
import type { GenerateOptions, Pipeline, StageTimings } from '../worker/pipeline/types.js';
import { sleep, waitFor } from './helpers/autoscaler.js';
import { startOwnRedis, type OwnRedis } from './helpers/redis-server.js';
import { startRestartableS3Server, type RestartableS3 } from './helpers/s3-server.js';
import { dropTestQueue } from './helpers/queue-teardown.js';
import { pino } from 'pino';
import { jobPayload } from './helpers/job-payload.js';

/**
 * The worker's job loop under outside faults, in-process with a fake pipeline whose runs the test
 * holds and releases: Redis away longer than the job lock, and storage away while jobs wait.
 */

const logger = pino({ level: 'silent' });

/** Each generate() waits until released (or aborted); counts calls, completions and aborts. */
/** `hold: false`: no call waits; `holdCalls`: only the first that many calls wait (default: all). */
function heldPipeline(options: { hold?: boolean; holdCalls?: number } = {}) {
  const seen = { calls: 0, completed: 0, aborted: 0, running: 0, maxRunning: 0 };
  let releaseAll: () => void = () => undefined;
  let released = !(options.hold ?? true);
  const gate = new Promise<void>((resolve) => (releaseAll = resolve));
  const pipeline: Pipeline = {
    capabilities: { name: 'fake', sizeMultiple: 8, minSize: 8, maxSize: 64, defaultSize: 8, defaultScheduler: 'DDIMScheduler', dtype: 'float32' },
    async generate(_request, generateOptions: GenerateOptions = {}) {
      seen.calls += 1;
      const holds = seen.calls <= (options.holdCalls ?? Infinity);
      seen.running += 1;
      seen.maxRunning = Math.max(seen.maxRunning, seen.running);
      try {
        while (!released && holds) {
          if (generateOptions.signal?.aborted) {
            seen.aborted += 1;
            throw Object.assign(new Error('aborted'), { name: 'AbortError', code: 'canceled' });
          }
          await Promise.race([gate, sleep(20)]);
        }
        seen.completed += 1;
        return { images: [{ width: 8, height: 8, seed: 1, data: new Uint8Array(8 * 8 * 3) }], timings: { total: 1 } as StageTimings };
      } finally {
        seen.running -= 1;
      }
    },
    release: async () => undefined,
  };
  return {
    pipeline,
    seen,
    release: () => {
      released = true;
      releaseAll();
    },
  };
}

const payload = jobPayload();

interface Harness {
  queue: Queue;
  connection: Redis;
  prefix: string;
  runner(pipeline: Pipeline, store: ImageStore, id: string, paused?: (reason: string | null) => void): Promise<JobRunner>;
  close(): Promise<void>;
}

async function harness(redisUrl: string, env: Record<string, string>): Promise<Harness> {
  const prefix = `test-wf-${randomUUID().slice(0, 8)}`;
  const config = loadConfig({ QUEUE_PREFIX: prefix, REDIS_URL: redisUrl, ...env });
  const connection = createRedis(redisUrl, 'worker');
  const queue = new Queue(GENERATE_QUEUE, { connection, prefix });
  const runners: { runner: JobRunner; connection: Redis }[] = [];
  return {
    queue,
    connection,
    prefix,
    async runner(pipeline, store, id, paused) {
      const own = createRedis(redisUrl, 'worker');
      const runner = createJobRunner({ config, connection: own, pipeline, store, logger, workerId: id, onPaused: paused });
      runners.push({ runner, connection: own });
      await runner.consumer.start();
      return runner;
    },
    async close() {
      for (const { runner, connection: own } of runners) {
        await runner.stopGate();
        await runner.consumer.close(true);
        await closeRedis(own);
      }
      await dropTestQueue(queue, connection, prefix);
    },
  };
}

const add = (queue: Queue, attempts = 3) => queue.add(GENERATE_JOB, payload, { jobId: randomUUID(), attempts, backoff: { type: 'fixed', delay: 50 } });

describe('Redis away for longer than the job lock', () => {
  let redis: OwnRedis;
  let h: Harness;
  let dir: string;
  beforeAll(async () => {
    redis = await startOwnRedis();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-wf-'));
  });
  afterEach(async () => {
    await h?.close();
  });
  afterAll(async () => {
    await redis?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a run whose completion was refused (its lock lapsed meanwhile) is completed from its stored result, not generated again', async () => {
    h = await harness(redis.url, { WORKER_LOCK_DURATION_MS: '1500', WORKER_STALLED_INTERVAL_MS: '300' });
    const held = heldPipeline();
    const store = new LocalImageStore(dir);
    await h.runner(held.pipeline, store, 'w1');
    const job = await add(h.queue);
    await waitFor('the run to start', () => held.seen.calls === 1);

    await redis.stop('shutdown');
    // The run finishes and stores its images and result while Redis is away; its completion waits.
    held.release();
    await waitFor('the stored result', () => fs.existsSync(path.join(dir, ...resultKey(job.id as string).split('/'))));
    await sleep(2000);
    await redis.start();

    const done = await waitFor('the job to complete', async () => ((await h.queue.getJobState(job.id as string)) === 'completed' ? h.queue.getJob(job.id as string) : null), 30_000, 100);
    expect(done?.returnvalue.workerId).toBe('w1');
    expect(done?.returnvalue.images).toEqual([expect.objectContaining({ key: `jobs/${job.id}/0.png`, width: 8, height: 8, seed: 1 })]);
    // Its lock lapsed: the job went back to the queue and started again, and that start reused the stored run.
    expect(done?.attemptsStarted).toBe(2);
    expect(held.seen.calls).toBe(1);
    expect(held.seen.completed).toBe(1);
  });

  it('a run whose lock lapsed while Redis was away stops, and the job runs to the end once', async () => {
    h = await harness(redis.url, { WORKER_LOCK_DURATION_MS: '1500', WORKER_STALLED_INTERVAL_MS: '300' });
    // Only the first run waits: once the job is back in the queue either worker may take it (w1's
    // loops are free again once the lapsed run stopped).
    const first = heldPipeline({ holdCalls: 1 });
    const second = heldPipeline({ hold: false });
    const store = new LocalImageStore(dir);
    await h.runner(first.pipeline, store, 'w1');
    const job = await add(h.queue);
    await waitFor('the first run', () => first.seen.calls === 1);
    // A second worker, idle, is there to take the job once it is back in the queue.
    await h.runner(second.pipeline, store, 'w2');

    await redis.stop('shutdown');
    await sleep(2500);
    await redis.start();

    const done = await waitFor('the job to complete', async () => ((await h.queue.getJobState(job.id as string)) === 'completed' ? h.queue.getJob(job.id as string) : null), 30_000, 100);
    // Released only now: without the lock check the first run would still be going and finish too.
    first.release();
    await sleep(300);
    expect(first.seen.aborted).toBe(1);
    expect(first.seen.completed + second.seen.completed).toBe(1);
    expect(done?.returnvalue.workerId).toBe(first.seen.completed === 1 ? 'w1' : 'w2');
  });
});

describe('storage away', () => {
  let s3: RestartableS3;
  let h: Harness;
  let store: S3ImageStore;
  beforeAll(async () => {
    s3 = await startRestartableS3Server();
    store = new S3ImageStore({
      endpoint: s3.endpoint,
      region: 'us-east-1',
      bucket: 'faults',
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
      forcePathStyle: true,
      createBucket: true,
      presignTtlS: 60,
    });
    await store.check();
  });
  afterEach(async () => {
    await h?.close();
    await s3.start();
  });
  afterAll(async () => {
    await store?.close();
    await s3?.close();
  });

  it('keeps the finished images of the running job and uploads them when storage is back; idle workers take no job meanwhile', async () => {
    h = await harness('redis://127.0.0.1:6379', { STORAGE_UPLOAD_RETRY_S: '120', STORAGE_RETRY_MAX_DELAY_S: '0.3' });
    const held = heldPipeline();
    const idle = heldPipeline({ hold: false });
    const pauses: Record<string, (string | null)[]> = { w1: [], w2: [] };
    await h.runner(held.pipeline, store, 'w1', (reason) => pauses.w1?.push(reason));
    const first = await add(h.queue);
    await waitFor('the first run', () => held.seen.calls === 1);

    await s3.stop();
    held.release();
    await waitFor('the busy worker to pause', () => pauses.w1?.length === 1);
    expect(pauses.w1?.[0]).toMatch(/^storage is failing: .*ECONNREFUSED/);
    // An idle worker and more jobs arrive during the outage.
    await h.runner(idle.pipeline, store, 'w2', (reason) => pauses.w2?.push(reason));
    const queued = [await add(h.queue), await add(h.queue)];
    await waitFor('the idle worker to pause', () => pauses.w2?.length === 1);
    await sleep(1500);
    // No job ran, and none spent an attempt: the one the idle worker took went back as it was.
    expect(held.seen.calls + idle.seen.calls).toBe(1);
    for (const j of queued) {
      const stored = await h.queue.getJob(j.id as string);
      expect([await stored?.getState(), stored?.attemptsMade]).toEqual(['waiting', 0]);
      expect(stored?.attemptsStarted).toBeLessThanOrEqual(1);
    }
    expect(await h.queue.getJobState(first.id as string)).toBe('active');

    await s3.start();
    for (const j of [first, ...queued]) {
      await waitFor(`job ${j.id} to complete`, async () => (await h.queue.getJobState(j.id as string)) === 'completed', 30_000, 100);
    }
    expect(pauses.w1).toEqual([pauses.w1?.[0], null]);
    expect(held.seen.calls + idle.seen.calls).toBe(3);
    expect((await h.queue.getJob(first.id as string))?.attemptsStarted).toBe(1);
    expect(await store.get(`jobs/${first.id}/0.png`)).not.toBeNull();
  });

  it('puts a job back untouched when storage cannot be read as it starts, and runs it once storage answers', async () => {
    h = await harness('redis://127.0.0.1:6379', { STORAGE_RETRY_MAX_DELAY_S: '0.3' });
    const held = heldPipeline({ hold: false });
    const pauses: (string | null)[] = [];
    await s3.stop();
    await h.runner(held.pipeline, store, 'w1', (reason) => pauses.push(reason));
    const job = await add(h.queue, 1);
    await waitFor('the worker to pause', () => pauses.length === 1);
    await waitFor('the job back in the queue', async () => (await h.queue.getJobState(job.id as string)) === 'waiting');
    expect((await h.queue.getJob(job.id as string))?.attemptsMade).toBe(0);
    expect(held.seen.calls).toBe(0);

    await s3.start();
    await waitFor('the job to complete', async () => (await h.queue.getJobState(job.id as string)) === 'completed', 30_000, 100);
    expect(held.seen.calls).toBe(1);
  });

  it('fails the attempt after STORAGE_UPLOAD_RETRY_S with the underlying error, and the next attempt succeeds', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-wf-local-'));
    // `jobs` is a file: every image write fails with ENOTDIR/EEXIST until it is removed.
    fs.writeFileSync(path.join(dir, 'jobs'), 'not a folder');
    h = await harness('redis://127.0.0.1:6379', { STORAGE_UPLOAD_RETRY_S: '0.5', STORAGE_RETRY_MAX_DELAY_S: '0.2' });
    const held = heldPipeline({ hold: false });
    await h.runner(held.pipeline, new LocalImageStore(dir), 'w1');
    const job = await add(h.queue, 3);
    const failed = await waitFor('the first attempt to fail', async () => {
      const j = await h.queue.getJob(job.id as string);
      return j && j.attemptsMade >= 1 ? j : null;
    }, 30_000, 50);
    expect(failed.failedReason).toMatch(/^storage_error: could not write jobs\/.*\/0\.png under .*: (ENOTDIR|EEXIST)/);
    fs.rmSync(path.join(dir, 'jobs'));
    await waitFor('the job to complete', async () => (await h.queue.getJobState(job.id as string)) === 'completed', 30_000, 100);
    expect(fs.existsSync(path.join(dir, 'jobs', job.id as string, '0.png'))).toBe(true);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
