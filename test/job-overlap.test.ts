import { randomUUID } from 'node:crypto';
import { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../shared/config.js';
import { JobRecovery } from '../shared/job-recovery.js';
import type { JobPayload } from '../shared/job-schema.js';
import { GENERATE_JOB, GENERATE_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { imageKey, resultKey, type ImageStore, type StoredObject } from '../shared/storage/index.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { Heartbeat } from '../worker/heartbeat.js';
import { createJobRunner, type JobRunner } from '../worker/job-runner.js';
import type { GenerateOptions, Pipeline, StageTimings } from '../worker/pipeline/types.js';
import { sleep, waitFor } from './helpers/autoscaler.js';
import { dropTestQueue } from './helpers/queue-teardown.js';
import { jobPayload } from './helpers/job-payload.js';

/**
 * The job loop's overlap: a worker encodes and uploads job N while job N+1 generates, and never
 * runs two generations at once. In-process against the shared Redis (a queue prefix of its own),
 * with a pipeline and a store whose every call the test holds and releases, and a log of when
 * each stage began and ended.
 */

const logger = pino({ level: 'silent' });
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';

interface Deferred {
  resolve(): void;
  promise: Promise<void>;
}
const deferred = (): Deferred => {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { resolve, promise };
};

/** What happened, in order: `gen-start:<seed>`, `gen-end:<seed>`, `put-start:<key>`, `put-end:<key>`. */
type Timeline = string[];

/** generate() waits for the test's `finish(seed)`; counts overlapping generations. */
function heldPipeline(timeline: Timeline) {
  const held = new Map<number, Deferred>();
  const seen = { running: 0, maxRunning: 0, calls: 0 };
  const holdFor = (seed: number) => {
    let d = held.get(seed);
    if (!d) held.set(seed, (d = deferred()));
    return d;
  };
  const pipeline: Pipeline = {
    capabilities: { name: 'fake', sizeMultiple: 8, minSize: 8, maxSize: 64, defaultSize: 8, defaultScheduler: 'DDIMScheduler', dtype: 'float32' },
    async generate(request, options: GenerateOptions = {}) {
      seen.calls += 1;
      seen.running += 1;
      seen.maxRunning = Math.max(seen.maxRunning, seen.running);
      timeline.push(`gen-start:${request.seed}`);
      try {
        const d = holdFor(request.seed);
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => reject(Object.assign(new Error('aborted'), { name: 'AbortError', code: 'canceled' }));
          if (options.signal?.aborted) return onAbort();
          options.signal?.addEventListener('abort', onAbort, { once: true });
          void d.promise.then(resolve);
        });
        return { images: [{ width: 8, height: 8, seed: request.seed, data: new Uint8Array(8 * 8 * 3) }], timings: { total: 1 } as StageTimings };
      } finally {
        timeline.push(`gen-end:${request.seed}`);
        seen.running -= 1;
      }
    },
    release: async () => undefined,
  };
  return { pipeline, seen, finish: (seed: number) => holdFor(seed).resolve() };
}

/** An in-memory store whose image uploads wait for the test's `allow(key)` unless `open`; counts puts per key. */
function heldStore(timeline: Timeline, options: { open?: boolean } = {}) {
  const objects = new Map<string, Uint8Array>();
  const puts = new Map<string, number>();
  const held = new Map<string, Deferred>();
  const holdFor = (key: string) => {
    let d = held.get(key);
    if (!d) held.set(key, (d = deferred()));
    return d;
  };
  const store: ImageStore = {
    kind: 'memory',
    async put(key, bytes) {
      puts.set(key, (puts.get(key) ?? 0) + 1);
      timeline.push(`put-start:${key}`);
      if (!options.open && !key.endsWith('.json')) await holdFor(key).promise;
      objects.set(key, bytes);
      timeline.push(`put-end:${key}`);
    },
    async get(key): Promise<StoredObject | null> {
      const bytes = objects.get(key);
      if (!bytes) return null;
      const { Readable } = await import('node:stream');
      return { body: Readable.from([Buffer.from(bytes)]), contentType: 'application/json', size: bytes.byteLength } as unknown as StoredObject;
    },
    async check() {},
  };
  return { store, puts, allow: (key: string) => holdFor(key).resolve() };
}

const payload = (seed: number, extra: Partial<JobPayload> = {}): JobPayload => jobPayload({ seed, ...extra });

interface Harness {
  prefix: string;
  queue: Queue<JobPayload>;
  connection: Redis;
  runner(id: string, pipeline: Pipeline, store: ImageStore, withHeartbeat?: boolean): Promise<{ runner: JobRunner; heartbeat?: Heartbeat }>;
  add(seed: number, extra?: Partial<JobPayload>): Promise<Job<JobPayload>>;
  close(): Promise<void>;
}

async function harness(env: Record<string, string> = {}): Promise<Harness> {
  const prefix = `test-overlap-${randomUUID().slice(0, 8)}`;
  const config = loadConfig({ QUEUE_PREFIX: prefix, REDIS_URL, ...env });
  const connection = createRedis(REDIS_URL, 'worker');
  const queue = new Queue<JobPayload>(GENERATE_QUEUE, { connection, prefix });
  const owned: { runner: JobRunner; connection: Redis; heartbeat?: Heartbeat }[] = [];
  return {
    prefix,
    queue,
    connection,
    async runner(id, pipeline, store, withHeartbeat = false) {
      const own = createRedis(REDIS_URL, 'worker');
      const heartbeat = withHeartbeat
        ? new Heartbeat({ redis: own, prefix, workerId: id, slot: 'cpu0', model: 'fake', intervalMs: 60_000, logger })
        : undefined;
      heartbeat?.start();
      const runner = createJobRunner({
        config,
        connection: own,
        pipeline,
        store,
        logger,
        workerId: id,
        ...(heartbeat ? { wrap: (p) => heartbeat.track(p), onStateChange: (s) => heartbeat.setState(s) } : {}),
      });
      owned.push({ runner, connection: own, heartbeat });
      await runner.consumer.start();
      return { runner, heartbeat };
    },
    add: (seed, extra = {}) => queue.add(GENERATE_JOB, payload(seed, extra), { jobId: randomUUID(), attempts: 2, backoff: { type: 'fixed', delay: 50 } }),
    async close() {
      for (const { runner, connection: own, heartbeat } of owned) {
        await runner.stopGate();
        await runner.consumer.close(true);
        await heartbeat?.stop();
        await closeRedis(own);
      }
      await dropTestQueue(queue, connection, prefix);
    },
  };
}

const state = (queue: Queue, job: Job) => queue.getJobState(job.id as string);

describe('the job loop overlaps encoding and upload with the next generation', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it("starts job 2's generation before job 1's upload ends; never two generations at once; each key written once", async () => {
    h = await harness();
    const timeline: Timeline = [];
    const gpu = heldPipeline(timeline);
    const storage = heldStore(timeline);
    await h.runner('w1', gpu.pipeline, storage.store);
    const jobs: Job<JobPayload>[] = [];
    for (let seed = 1; seed <= 4; seed++) jobs.push(await h.add(seed));
    const key = (i: number) => imageKey(jobs[i]!.id as string, 0, 'png');

    await waitFor('job 1 generating', () => timeline.includes('gen-start:1'));
    gpu.finish(1);
    await waitFor("job 1's upload", () => timeline.includes(`put-start:${key(0)}`));
    // Job 1 is still uploading (held) and job 2 generates meanwhile.
    await waitFor('job 2 generating', () => timeline.includes('gen-start:2'));
    expect(timeline).not.toContain(`put-end:${key(0)}`);
    expect(await state(h.queue, jobs[0]!)).toBe('active');
    expect(await state(h.queue, jobs[1]!)).toBe('active');
    // The worker holds no third job while job 2 has the GPU.
    await sleep(200);
    expect(await state(h.queue, jobs[2]!)).toBe('waiting');
    expect(timeline).not.toContain('gen-start:3');

    storage.allow(key(0));
    await waitFor('job 1 done', async () => (await state(h!.queue, jobs[0]!)) === 'completed');
    // Job 1's upload ending does not start job 3: job 2 still has the GPU.
    await sleep(200);
    expect(timeline).not.toContain('gen-start:3');
    expect(await state(h.queue, jobs[2]!)).toBe('waiting');

    // The rest run through with uploads released as they come.
    for (let i = 1; i < 4; i++) {
      gpu.finish(i + 1);
      await waitFor(`job ${i + 1}'s upload`, () => timeline.includes(`put-start:${key(i)}`));
      storage.allow(key(i));
    }
    for (const job of jobs) await waitFor('every job done', async () => (await state(h!.queue, job)) === 'completed');

    expect(gpu.seen.maxRunning).toBe(1);
    expect(gpu.seen.calls).toBe(4);
    // Every generation began after the one before it ended.
    for (let seed = 2; seed <= 4; seed++) expect(timeline.indexOf(`gen-start:${seed}`)).toBeGreaterThan(timeline.indexOf(`gen-end:${seed - 1}`));
    // Job 3 started only once job 2's generation ended, and before job 2's upload ended.
    expect(timeline.indexOf('gen-start:3')).toBeLessThan(timeline.indexOf(`put-end:${key(1)}`));
    for (let i = 0; i < 4; i++) {
      expect(storage.puts.get(key(i))).toBe(1);
      expect(storage.puts.get(resultKey(jobs[i]!.id as string))).toBe(1);
      const done = await h.queue.getJob(jobs[i]!.id as string);
      expect(done?.returnvalue.images.map((im: { key: string }) => im.key)).toEqual([key(i)]);
      expect(done?.attemptsStarted).toBe(1);
    }
  });

  it('a job queued while this worker generates goes to an idle worker, not to wait for this GPU', async () => {
    h = await harness();
    const timeline: Timeline = [];
    const gpuA = heldPipeline(timeline);
    const storage = heldStore(timeline);
    await h.runner('a', gpuA.pipeline, storage.store);
    const first = await h.add(1);
    await waitFor('job 1 generating on a', () => timeline.includes('gen-start:1'));
    const second = await h.add(2);
    await sleep(200);
    expect(await state(h.queue, second)).toBe('waiting');
    const gpuB = heldPipeline(timeline);
    await h.runner('b', gpuB.pipeline, storage.store);
    await waitFor('job 2 generating on b', () => gpuB.seen.calls === 1);
    expect(gpuA.seen.calls).toBe(1);
    gpuA.finish(1);
    gpuB.finish(2);
    storage.allow(imageKey(first.id as string, 0, 'png'));
    storage.allow(imageKey(second.id as string, 0, 'png'));
    await waitFor('both done', async () => (await state(h!.queue, first)) === 'completed' && (await state(h!.queue, second)) === 'completed');
  });

  it('a job that arrives while one worker generates and another idles goes to the idle one, whichever loop woke first', async () => {
    h = await harness();
    const timelineA: Timeline = [];
    const timelineB: Timeline = [];
    const gpuA = heldPipeline(timelineA);
    const gpuB = heldPipeline(timelineB);
    const storage = heldStore([], { open: true });
    // Both idle first: every loop blocks on the queue's wake-up marker, and the one that a job wakes
    // may be the busy worker's second loop.
    await h.runner('a', gpuA.pipeline, storage.store);
    await h.runner('b', gpuB.pipeline, storage.store);
    await sleep(300);
    for (let round = 0; round < 6; round++) {
      const first = await h.add(2 * round + 1);
      await waitFor('the first job generating', () => gpuA.seen.running + gpuB.seen.running === 1);
      const [busy, idle] = gpuA.seen.running === 1 ? [gpuA, gpuB] : [gpuB, gpuA];
      const idleCalls = idle.seen.calls;
      const second = await h.add(2 * round + 2);
      // The second job starts on the idle worker while the first still generates.
      await waitFor(`round ${round}: the second job on the idle worker`, () => idle.seen.calls === idleCalls + 1, 5000);
      expect(busy.seen.running).toBe(1);
      gpuA.finish(2 * round + 1);
      gpuB.finish(2 * round + 1);
      gpuA.finish(2 * round + 2);
      gpuB.finish(2 * round + 2);
      await waitFor('both done', async () => (await state(h!.queue, first)) === 'completed' && (await state(h!.queue, second)) === 'completed');
      await sleep(100);
    }
    expect(gpuA.seen.maxRunning).toBe(1);
    expect(gpuB.seen.maxRunning).toBe(1);
  });

  it('cancel reaches the generating job while the one before it uploads, and that one still succeeds', async () => {
    h = await harness();
    const timeline: Timeline = [];
    const gpu = heldPipeline(timeline);
    const storage = heldStore(timeline);
    const { runner } = await h.runner('w1', gpu.pipeline, storage.store);
    const first = await h.add(1);
    const second = await h.add(2);
    await waitFor('job 1 generating', () => timeline.includes('gen-start:1'));
    gpu.finish(1);
    await waitFor('job 2 generating', () => timeline.includes('gen-start:2'));
    expect(runner.consumer.cancel(second.id as string)).toBe(true);
    await waitFor('job 2 failed', async () => (await state(h!.queue, second)) === 'failed');
    expect((await h.queue.getJob(second.id as string))?.failedReason).toMatch(/^canceled/);
    expect(await state(h.queue, first)).toBe('active');
    storage.allow(imageKey(first.id as string, 0, 'png'));
    await waitFor('job 1 done', async () => (await state(h!.queue, first)) === 'completed');
    expect(storage.puts.get(imageKey(second.id as string, 0, 'png'))).toBeUndefined();
  });

  it("a job's deadline counts its own run, not the time it waited for the GPU", async () => {
    h = await harness();
    const timeline: Timeline = [];
    const gpu = heldPipeline(timeline);
    const storage = heldStore(timeline, { open: true });
    await h.runner('w1', gpu.pipeline, storage.store);
    const first = await h.add(1);
    const second = await h.add(2, { timeoutS: 1 });
    await waitFor('job 1 generating', () => timeline.includes('gen-start:1'));
    // Longer than job 2's deadline: job 2 is not taken meanwhile, so its clock has not started.
    await sleep(1300);
    expect(await state(h.queue, second)).toBe('waiting');
    gpu.finish(1);
    await waitFor('job 2 generating', () => timeline.includes('gen-start:2'));
    gpu.finish(2);
    await waitFor('both done', async () => (await state(h!.queue, first)) === 'completed' && (await state(h!.queue, second)) === 'completed');
    // And the deadline still holds over the job's own generation (job 3 is never released).
    const third = await h.add(3, { timeoutS: 1 });
    await waitFor('job 3 failed', async () => (await state(h!.queue, third)) === 'failed', 10_000);
    expect((await h.queue.getJob(third.id as string))?.failedReason).toMatch(/^timeout/);
  });

  it('a drain finishes both held jobs and takes no other', async () => {
    h = await harness();
    const timeline: Timeline = [];
    const gpu = heldPipeline(timeline);
    const storage = heldStore(timeline);
    const { runner } = await h.runner('w1', gpu.pipeline, storage.store);
    const jobs = [await h.add(1), await h.add(2), await h.add(3)];
    await waitFor('job 1 generating', () => timeline.includes('gen-start:1'));
    gpu.finish(1);
    await waitFor('job 2 generating', () => timeline.includes('gen-start:2'));
    let drained = false;
    const drain = runner.consumer.close().then(() => (drained = true));
    await sleep(100);
    expect(drained).toBe(false);
    gpu.finish(2);
    storage.allow(imageKey(jobs[0]!.id as string, 0, 'png'));
    storage.allow(imageKey(jobs[1]!.id as string, 0, 'png'));
    await drain;
    expect(await state(h.queue, jobs[0]!)).toBe('completed');
    expect(await state(h.queue, jobs[1]!)).toBe('completed');
    expect(await state(h.queue, jobs[2]!)).toBe('waiting');
    expect(gpu.seen.calls).toBe(2);
  });

  it('a storage failure during an upload stops new takes; the generating job finishes and both upload once storage answers', async () => {
    h = await harness({ STORAGE_UPLOAD_RETRY_S: '30', STORAGE_RETRY_MAX_DELAY_S: '0.2' });
    const timeline: Timeline = [];
    const gpu = heldPipeline(timeline);
    const storage = heldStore(timeline, { open: true });
    let failing = true;
    const flaky: ImageStore = {
      ...storage.store,
      put: async (key, bytes, type) => {
        if (failing) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
        return storage.store.put(key, bytes, type);
      },
      check: async () => {
        if (failing) throw new Error('connect ECONNREFUSED');
      },
    };
    const pauses: (string | null)[] = [];
    const own = createRedis(REDIS_URL, 'worker');
    const runner = createJobRunner({
      config: loadConfig({ QUEUE_PREFIX: h.prefix, REDIS_URL, STORAGE_UPLOAD_RETRY_S: '30', STORAGE_RETRY_MAX_DELAY_S: '0.2' }),
      connection: own,
      pipeline: gpu.pipeline,
      store: flaky,
      logger,
      workerId: 'w1',
      onPaused: (reason) => pauses.push(reason),
    });
    await runner.consumer.start();
    try {
      const jobs: Job<JobPayload>[] = [await h.add(1), await h.add(2), await h.add(3)];
      await waitFor('job 1 generating', () => timeline.includes('gen-start:1'));
      gpu.finish(1);
      await waitFor('storage reported failing', () => pauses.length > 0);
      // Job 2 had taken the GPU as job 1's upload began; it generates, and job 3 stays queued.
      await waitFor('job 2 generating', () => timeline.includes('gen-start:2'));
      gpu.finish(2);
      await sleep(300);
      expect(await state(h.queue, jobs[2]!)).toBe('waiting');
      failing = false;
      gpu.finish(3);
      for (const job of jobs) await waitFor('every job done', async () => (await state(h!.queue, job)) === 'completed', 15_000);
      for (const job of jobs) expect(storage.puts.get(imageKey(job.id as string, 0, 'png'))).toBe(1);
      expect(gpu.seen.maxRunning).toBe(1);
    } finally {
      await runner.stopGate();
      await runner.consumer.close(true);
      await closeRedis(own);
    }
  });

  it('the heartbeat names both held jobs with their tokens, and both come back at once after a kill', async () => {
    h = await harness();
    const timeline: Timeline = [];
    const gpu = heldPipeline(timeline);
    const storage = heldStore(timeline);
    const { runner } = await h.runner('w-held', gpu.pipeline, storage.store, true);
    const first = await h.add(1);
    const second = await h.add(2);
    await waitFor('job 1 generating', () => timeline.includes('gen-start:1'));
    gpu.finish(1);
    await waitFor('job 2 generating', () => timeline.includes('gen-start:2'));
    const registry = new WorkerRegistry(h.connection, h.prefix);
    const record = await waitFor('the record naming both jobs', async () => {
      const r = await registry.get('w-held');
      return r && (r.heldJobs ?? []).length === 2 ? r : null;
    });
    // The generating job is the current one; the uploading one follows.
    expect(record.currentJob).toBe(second.id);
    expect(record.heldJobs?.map((j) => j.id)).toEqual([second.id, first.id]);
    expect(record.state).toBe('busy');

    // What the autoscaler does once it sees the worker exit: every held job back in the queue,
    // each only while the dead worker's token still holds it.
    await runner.consumer.close(true);
    const recovery = new JobRecovery(h.connection, h.prefix);
    try {
      for (const held of record.heldJobs ?? []) expect(await recovery.requeue(held.id, held.token as string, 'test kill')).toBe('requeued');
      expect(await state(h.queue, first)).toBe('waiting');
      expect(await state(h.queue, second)).toBe('waiting');
      // A token from the dead run no longer holds anything.
      expect(await recovery.requeue(first.id as string, record.heldJobs?.[1]?.token as string, 'again')).toBe('not-held');
    } finally {
      await recovery.close();
    }
  });

  it("the heartbeat names a finished job until the queue has its completion: a kill in between still puts it back", async () => {
    h = await harness();
    const gpu = heldPipeline([]);
    const storage = heldStore([], { open: true });
    const { runner } = await h.runner('w-commit', gpu.pipeline, storage.store, true);
    const registry = new WorkerRegistry(h.connection, h.prefix);

    // A job whose completion reaches the queue leaves the record.
    const done = await h.add(1);
    gpu.finish(1);
    await waitFor('job 1 completed', async () => (await state(h!.queue, done)) === 'completed');
    await waitFor('the record to let it go', async () => ((await registry.get('w-commit'))?.heldJobs ?? []).length === 0);

    // The next one is done here, but its completion is held on its way to Redis (as by a kill -9
    // at that moment): the job is still active under this worker's lock, and the record says so.
    const original = Job.prototype.moveToCompleted;
    const reached = deferred();
    const hold = deferred();
    const spy = vi.spyOn(Job.prototype, 'moveToCompleted').mockImplementation(async function (this: Job, ...args: Parameters<Job['moveToCompleted']>) {
      if (this.id === pending.id) {
        reached.resolve();
        await hold.promise;
      }
      return original.apply(this, args);
    });
    const pending = await h.add(2);
    try {
      gpu.finish(2);
      await reached.promise;
      // 'ready' is written once the processor has returned; the job is still named after it.
      const record = await waitFor('the record of an idle worker', async () => {
        const r = await registry.get('w-commit');
        return r?.state === 'ready' ? r : null;
      });
      expect(record.heldJobs?.map((j) => j.id)).toEqual([pending.id]);
      expect(await state(h.queue, pending)).toBe('active');

      await runner.consumer.close(true);
      const recovery = new JobRecovery(h.connection, h.prefix);
      try {
        expect(await recovery.requeue(pending.id as string, record.heldJobs?.[0]?.token as string, 'test kill')).toBe('requeued');
        expect(await state(h.queue, pending)).toBe('waiting');
      } finally {
        await recovery.close();
      }
    } finally {
      spy.mockRestore();
      hold.resolve();
    }
  });
});

/** generate() takes `ms` (a timer: the CPU idles, as with a GPU) unless the seed is in `held`: then it waits for `finish(seed)`. */
function timedPipeline(ms: number, heldSeeds: number[] = []) {
  const held = heldPipeline([]);
  const times = new Map<number, { start: number; end: number }>();
  const seen = { running: 0, maxRunning: 0, calls: 0 };
  const pipeline: Pipeline = {
    ...held.pipeline,
    async generate(request, options: GenerateOptions = {}) {
      seen.calls += 1;
      seen.running += 1;
      seen.maxRunning = Math.max(seen.maxRunning, seen.running);
      const start = Date.now();
      try {
        if (heldSeeds.includes(request.seed)) return await held.pipeline.generate(request, options);
        await sleep(ms);
        return { images: [{ width: 8, height: 8, seed: request.seed, data: new Uint8Array(8 * 8 * 3) }], timings: { total: ms } as StageTimings };
      } finally {
        times.set(request.seed, { start, end: Date.now() });
        seen.running -= 1;
      }
    },
  };
  return { pipeline, seen, times, finish: held.finish };
}

describe('the job loop takes the next job in the last moments of a predictable generation', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('takes the next job before the generation in progress ends, no sooner than WORKER_EARLY_TAKE_MS before its expected end, and never runs two at once', { timeout: 60_000 }, async () => {
    h = await harness({ WORKER_EARLY_TAKE_MS: '20' });
    // Long enough that timer jitter on a loaded machine stays within the 10 % that makes a shape predictable.
    const cost = 300;
    const gpu = timedPipeline(cost);
    const storage = heldStore([], { open: true });
    await h.runner('w1', gpu.pipeline, storage.store);
    const jobs: Job<JobPayload>[] = [];
    for (let seed = 1; seed <= 8; seed++) jobs.push(await h.add(seed));
    for (const job of jobs) await waitFor('every job done', async () => (await state(h!.queue, job)) === 'completed', 30_000);

    expect(gpu.seen.maxRunning).toBe(1);
    const early: number[] = [];
    for (let seed = 2; seed <= 8; seed++) {
      const before = gpu.times.get(seed - 1)!;
      const own = gpu.times.get(seed)!;
      // One generation at a time, in queue order.
      expect(own.start).toBeGreaterThanOrEqual(before.end);
      const taken = (await h.queue.getJob(jobs[seed - 1]!.id as string))!.processedOn!;
      // A generation never ends before its timer (cost), and the estimate is of such generations:
      // the earliest a job may be taken is that estimate less the 20 ms lead after the one before it began.
      expect(taken).toBeGreaterThanOrEqual(before.start + cost - 20 - 2);
      if (taken < before.end) early.push(seed);
    }
    // After three generations of one shape the worker knows their length and takes ahead.
    expect(early.length).toBeGreaterThan(0);
    for (const job of jobs) expect((await h.queue.getJob(job.id as string))?.attemptsStarted).toBe(1);
  });

  it('with WORKER_EARLY_TAKE_MS=0 a job is taken only once the generation before it ended', async () => {
    h = await harness({ WORKER_EARLY_TAKE_MS: '0' });
    const gpu = timedPipeline(100);
    const storage = heldStore([], { open: true });
    await h.runner('w1', gpu.pipeline, storage.store);
    const jobs: Job<JobPayload>[] = [];
    for (let seed = 1; seed <= 6; seed++) jobs.push(await h.add(seed));
    for (const job of jobs) await waitFor('every job done', async () => (await state(h!.queue, job)) === 'completed', 30_000);
    for (let seed = 2; seed <= 6; seed++) {
      const taken = (await h.queue.getJob(jobs[seed - 1]!.id as string))!.processedOn!;
      expect(taken).toBeGreaterThanOrEqual(gpu.times.get(seed - 1)!.end);
    }
  });

  it('a job taken early whose predecessor runs long goes back to the queue untouched, and an idle worker runs it', async () => {
    h = await harness({ WORKER_EARLY_TAKE_MS: '20' });
    const timeline: Timeline = [];
    // Seeds 1–4 take 300 ms each; seed 5 runs until the test ends it.
    const gpuA = timedPipeline(300, [5]);
    const storage = heldStore(timeline, { open: true });
    await h.runner('a', gpuA.pipeline, storage.store);
    const jobs: Job<JobPayload>[] = [];
    for (let seed = 1; seed <= 6; seed++) jobs.push(await h.add(seed));
    const sixth = jobs[5]!;
    await waitFor('job 5 generating', () => gpuA.seen.calls === 5 && gpuA.seen.running === 1, 30_000);
    // Job 6 is taken in what should have been job 5's last moments, waits, then goes back.
    await waitFor('job 6 taken early', async () => (await h!.queue.getJob(sixth.id as string))?.attemptsStarted === 1, 10_000);
    await waitFor('job 6 back in the queue', async () => (await state(h!.queue, sixth)) === 'waiting', 10_000);
    expect(gpuA.seen.calls).toBe(5);
    const back = await h.queue.getJob(sixth.id as string);
    expect(back?.attemptsMade).toBe(0);

    const gpuB = timedPipeline(100);
    await h.runner('b', gpuB.pipeline, storage.store);
    await waitFor('job 6 done', async () => (await state(h!.queue, sixth)) === 'completed', 10_000);
    gpuA.finish(5);
    await waitFor('job 5 done', async () => (await state(h!.queue, jobs[4]!)) === 'completed', 10_000);
    const done = await h.queue.getJob(sixth.id as string);
    expect(done?.returnvalue.workerId).toBe('b');
    expect(gpuB.seen.calls).toBe(1);
    expect(gpuA.seen.calls).toBe(5);
    expect(gpuA.seen.maxRunning).toBe(1);
    expect(storage.puts.get(imageKey(sixth.id as string, 0, 'png'))).toBe(1);
  });

  it('a job canceled while it waits for the GPU it was taken early for ends canceled and never generates', async () => {
    h = await harness({ WORKER_EARLY_TAKE_MS: '20' });
    const gpu = timedPipeline(300, [5]);
    const storage = heldStore([], { open: true });
    const { runner } = await h.runner('a', gpu.pipeline, storage.store);
    const jobs: Job<JobPayload>[] = [];
    for (let seed = 1; seed <= 6; seed++) jobs.push(await h.add(seed));
    const sixth = jobs[5]!;
    await waitFor('job 5 generating', () => gpu.seen.calls === 5 && gpu.seen.running === 1, 30_000);
    await waitFor('job 6 taken early', async () => (await state(h!.queue, sixth)) === 'active', 10_000);
    expect(runner.consumer.cancel(sixth.id as string)).toBe(true);
    await waitFor('job 6 failed', async () => (await state(h!.queue, sixth)) === 'failed', 10_000);
    const failed = await h.queue.getJob(sixth.id as string);
    expect(failed?.failedReason).toMatch(/canceled/);
    gpu.finish(5);
    await waitFor('job 5 done', async () => (await state(h!.queue, jobs[4]!)) === 'completed', 10_000);
    expect(gpu.seen.calls).toBe(5);
  });
});
