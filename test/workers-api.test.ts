import { randomUUID } from 'node:crypto';
import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BullQueueLoad } from '../shared/queue-load.js';
import { GENERATE_JOB, GENERATE_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { Heartbeat } from '../worker/heartbeat.js';
import { silentLogger, startStack, type TestStack } from './helpers/stack.js';
import { deletePrefix, sleep, waitFor } from './helpers/autoscaler.js';

/** GET /v1/workers from the heartbeats, GET /v1/queue with the full load (not the wait list alone). */
let stack: TestStack;
let redis: ReturnType<typeof createRedis>;
let registry: WorkerRegistry;

beforeAll(async () => {
  stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: `/tmp/sdjobs-workers-api-${randomUUID()}` }, { worker: false });
  redis = createRedis(stack.config.redisUrl, 'worker');
  registry = new WorkerRegistry(redis, stack.config.queuePrefix);
});
afterAll(async () => {
  await stack?.close();
  await deletePrefix(redis, stack.config.queuePrefix);
  await closeRedis(redis);
});

const getJson = async (path: string) => {
  const res = await fetch(`${stack.api.url}${path}`);
  expect(res.status).toBe(200);
  return (await res.json()) as any;
};

describe('GET /v1/workers', () => {
  it('lists each worker with its slot, state, current job, uptime and jobs done, from its heartbeats', async () => {
    const heartbeat = new Heartbeat({ redis, prefix: stack.config.queuePrefix, workerId: 'w-1', slot: 'gpu1', model: 'tiny-sd', intervalMs: 100, logger: silentLogger });
    heartbeat.start();
    const starting = await waitFor('the starting record', async () => (await getJson('/v1/workers')).workers[0]);
    expect(starting).toMatchObject({ id: 'w-1', slot: 'gpu1', state: 'starting', current_job: null, jobs_done: 0, model: 'tiny-sd', pid: process.pid });

    heartbeat.setState('ready');
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const run = heartbeat.track(async (_job: { id?: string }) => gate);
    heartbeat.setState('busy');
    const running = run({ id: 'job-42' });
    const busy = await waitFor('the busy record', async () => {
      const w = (await getJson('/v1/workers')).workers[0];
      return w.state === 'busy' && w.current_job === 'job-42' ? w : null;
    });
    expect(busy.jobs_done).toBe(0);
    await sleep(300);
    release();
    await running;
    heartbeat.setState('ready');
    const done = await waitFor('the finished job to count', async () => {
      const w = (await getJson('/v1/workers')).workers[0];
      return w.jobs_done === 1 && w.state === 'ready' ? w : null;
    });
    expect(done.current_job).toBeNull();
    expect(done.uptime_s).toBeGreaterThan(0.2);
    expect(Date.parse(done.last_seen_at)).toBeGreaterThanOrEqual(Date.parse(done.started_at));

    heartbeat.setState('draining');
    await waitFor('the draining record', async () => (await getJson('/v1/workers')).workers[0]?.state === 'draining');
    // A stopped worker removes itself.
    heartbeat.setState('stopped');
    await heartbeat.stop();
    expect((await getJson('/v1/workers')).workers).toEqual([]);
  });

  it("drops a worker that stopped heartbeating (killed) once its record expires", async () => {
    const now = Date.now();
    await registry.put(
      { id: 'ghost', slot: 'cpu0', state: 'busy', currentJob: 'j', startedAt: now, lastSeenAt: now, jobsDone: 3, jobsFailed: 0, host: 'h', pid: 1, model: 'm' },
      300,
    );
    expect((await getJson('/v1/workers')).count).toBe(1);
    await sleep(400);
    expect((await getJson('/v1/workers')).count).toBe(0);
    // The index was pruned too.
    expect(await redis.zcard(`${stack.config.queuePrefix}:workers`)).toBe(0);
  });

  it("shows the autoscaler's view: leader, target, bounds and each slot", async () => {
    expect((await getJson('/v1/workers')).autoscaler).toBeNull();
    await registry.putAutoscalerStatus(
      {
        leader: 'as-1',
        host: 'box',
        at: Date.now(),
        desired: 2,
        target: 1,
        load: 3,
        bounds: { min: 0, max: 2 },
        lastDecision: { action: 'up', reason: 'cold-start', at: Date.now() },
        slots: [
          { id: 'gpu0', kind: 'gpu', state: 'occupied', workerId: 'w-1', reason: null, until: null },
          { id: 'gpu1', kind: 'gpu', state: 'crash-loop', workerId: null, reason: 'CUDA error', until: Date.now() + 60_000 },
        ],
      },
      5000,
    );
    const { autoscaler } = await getJson('/v1/workers');
    expect(autoscaler).toMatchObject({ leader: 'as-1', desired: 2, target: 1, load: 3, min_workers: 0, max_workers: 2, last_decision: { action: 'up', reason: 'cold-start' } });
    expect(autoscaler.slots[1]).toMatchObject({ id: 'gpu1', state: 'crash-loop', reason: 'CUDA error' });
  });
});

describe('GET /v1/queue', () => {
  it('counts waiting, prioritized, due delayed and running jobs: the full load KEDA scales on', async () => {
    const { queue } = stack;
    const payload = { prompt: 'x' };
    // One job running: taken by a consumer that never finishes it.
    await queue.add(GENERATE_JOB, payload, { jobId: 'running' });
    const consumerConnection = createRedis(stack.config.redisUrl, 'worker');
    const consumer = new Worker(GENERATE_QUEUE, null, { connection: consumerConnection, prefix: stack.config.queuePrefix, autorun: false });
    const active = await consumer.getNextJob('token');
    expect(active?.id).toBe('running');

    await queue.add(GENERATE_JOB, payload, { jobId: 'w1' });
    await queue.add(GENERATE_JOB, payload, { jobId: 'w2' });
    await queue.add(GENERATE_JOB, payload, { jobId: 'p1', priority: 5 });
    await queue.add(GENERATE_JOB, payload, { jobId: 'retry-due', delay: 1 });
    await queue.add(GENERATE_JOB, payload, { jobId: 'later', delay: 3_600_000 });
    await sleep(20);

    const body = await getJson('/v1/queue');
    expect(body).toMatchObject({ load: 5, waiting: 2, prioritized: 1, delayed_due: 1, active: 1, delayed: 2 });
    // The wait list alone (what KEDA's redis-lists scaler reads) sees 2 of the 5.
    expect(await redis.llen(queue.toKey('wait'))).toBe(2);

    const reader = new BullQueueLoad(redis, stack.config.queuePrefix);
    expect((await reader.read()).load).toBe(5);
    await reader.close();
    await consumer.close(true);
    await closeRedis(consumerConnection);
  });
});
