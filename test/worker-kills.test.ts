import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { DriverEvent } from '../autoscaler/worker-driver.js';
import { getJob, sleep, SLOW_JOB, startScaledStack, submitJob, waitFor, waitMidJob, type ScaledStack } from './helpers/autoscaler.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { createRedis, closeRedis } from '../shared/redis.js';
import type { Pipeline, StageTimings } from '../worker/pipeline/types.js';

/**
 * Workers killed with -9 are a kill, not a crash loop: a worker that was ready and served is
 * replaced after the restart backoff however often it happens, and its job goes back to the
 * queue as soon as the autoscaler sees the exit, not once the job lock lapses. Real worker
 * processes on the tiny model; the lock is made far longer than the test so that only the
 * autoscaler can have put the job back.
 */

const LOCK_MS = 120_000;

describe('workers killed one after another', () => {
  let stack: ScaledStack;
  beforeAll(async () => {
    stack = await startScaledStack(inject('tinyModelDir'), {
      AUTOSCALER_CPU_SLOTS: '2',
      AUTOSCALER_MAX_WORKERS: '2',
      AUTOSCALER_INITIAL_WORKERS: '2',
      AUTOSCALER_MIN_WORKERS: '2',
      AUTOSCALER_RESTART_BACKOFF_MS: '200',
      // Two crashes would be a crash loop, if kills of ready workers counted.
      AUTOSCALER_CRASH_LOOP_RESTARTS: '2',
      AUTOSCALER_CRASH_LOOP_WINDOW_S: '300',
      WORKER_LOCK_DURATION_MS: String(LOCK_MS),
      WORKER_STALLED_INTERVAL_MS: '1000',
    });
  });
  afterAll(async () => stack?.close());
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(stack.logs().slice(-20_000));
  });

  it('replaces each killed worker without a crash loop, and its job is back in the queue before its lock could lapse', { timeout: 180_000 }, async () => {
    const kills: { jobId: string; at: number }[] = [];
    for (let round = 0; round < 4; round++) {
      const id = await submitJob(stack.api.url, { ...SLOW_JOB, num_inference_steps: 120, seed: round });
      await waitMidJob(stack.api.url, id);
      // Killed while it holds this job alone: a worker also holds the job before while it uploads
      // (that one would be put back too, and run a third time; 'a killed worker holding two jobs' below).
      const victim = await waitFor('the busy worker record', async () =>
        (await stack.registry.list()).find((r) => r.currentJob === id && (r.heldJobs ?? []).length === 1),
      );
      // Its record names its BullMQ loops, whose prefix is on the job's lock token: a job it took
      // a moment before the record named it would be found by that too.
      expect(victim.lockOwners?.some((owner) => victim.heldJobs?.[0]?.token?.startsWith(`${owner}:`))).toBe(true);
      process.kill(victim.pid, 'SIGKILL');
      kills.push({ jobId: id, at: Date.now() });
      await waitFor('the exit', () => stack.events.some((e) => e.type === 'exited' && e.worker.id === victim.id));
      // Its job does not show as running while nobody runs it.
      const after = await waitFor('the job to leave the dead worker', async () => {
        const job = await getJob(stack.api.url, id);
        return job.status !== 'running' || (await stack.registry.list()).some((r) => r.currentJob === id) ? job : null;
      });
      expect(['queued', 'running', 'succeeded']).toContain(after.status);
    }
    for (const { jobId, at } of kills) {
      const job = await pollJob(stack.api.url, jobId, 100);
      expect(job.status).toBe('succeeded');
      const stored = await stack.queue.getJob(jobId);
      // Ran again after the kill, and finished long before the dead worker's lock would have lapsed.
      expect(stored?.attemptsStarted).toBe(2);
      expect(stored?.stalledCounter).toBe(1);
      expect(stored?.finishedOn).toBeLessThan(at + LOCK_MS / 2);
    }
    expect(stack.events.filter((e) => e.type === 'crash-loop')).toEqual([]);
    const backoffs = stack.events.filter((e): e is Extract<DriverEvent, { type: 'backoff' }> => e.type === 'backoff');
    expect(backoffs.map((e) => e.crashes)).toEqual([0, 0, 0, 0]);
    // Both slots serve again.
    await waitFor('two ready workers', async () => (await stack.registry.list()).filter((r) => r.state === 'ready').length === 2, 60_000);
    const view = (await (await fetch(`${stack.api.url}/v1/workers`)).json()) as any;
    expect(view.autoscaler.slots.map((s: { state: string }) => s.state)).toEqual(['occupied', 'occupied']);
  });
});

describe('a running job whose worker has gone silent', () => {
  let stack: TestStack;
  let release: () => void = () => undefined;
  beforeAll(async () => {
    const held = new Promise<void>((resolve) => (release = resolve));
    const pipeline: Pipeline = {
      capabilities: { name: 'fake', sizeMultiple: 8, minSize: 8, maxSize: 512, defaultSize: 64, defaultScheduler: 'DDIMScheduler', dtype: 'float32' },
      async generate() {
        await held;
        return { images: [{ width: 8, height: 8, seed: 1, data: new Uint8Array(8 * 8 * 3) }], timings: { total: 1 } as StageTimings };
      },
      release: async () => undefined,
    };
    stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), WORKER_HEARTBEAT_MS: '200', STORAGE_LOCAL_DIR: '/tmp/sdjobs-silent-worker' }, { pipeline, notifier: false });
  });
  afterAll(async () => {
    release();
    await stack?.close();
  });

  it('reads queued, not running, once no live worker names it', async () => {
    const res = await fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', img_size: 64 }) });
    const { id } = (await res.json()) as { id: string };
    await waitFor('the job to run', async () => (await getJob(stack.api.url, id)).status === 'running');
    await sleep(600);
    expect((await getJob(stack.api.url, id)).status).toBe('running');

    const redis = createRedis(stack.config.redisUrl, 'worker');
    const registry = new WorkerRegistry(redis, stack.config.queuePrefix);
    expect((await registry.list()).map((w) => w.currentJob)).toEqual([id]);
    // Its worker's record goes (as when its heartbeat expires after a kill -9); the job is still active in Redis.
    await stack.heartbeat?.stop();
    expect(await registry.list()).toEqual([]);
    const view = await getJob(stack.api.url, id);
    expect(view.status).toBe('queued');
    expect(view.queue_position).toBeNull();
    expect(await stack.queue.getJobState(id)).toBe('active');
    await closeRedis(redis);
  });
});
