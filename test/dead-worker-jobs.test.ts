import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Autoscaler } from '../autoscaler/autoscaler.js';
import type { LeaderLock } from '../autoscaler/leader-lock.js';
import type { DriverEvent, DriverWorker, WorkerDriver } from '../autoscaler/worker-driver.js';
import { JobRecovery } from '../shared/job-recovery.js';
import type { QueueLoad } from '../shared/queue-load.js';
import { createRedis } from '../shared/redis.js';
import { WorkerRegistry, type WorkerRecord } from '../shared/worker-registry.js';
import { dropTestQueue } from './helpers/queue-teardown.js';

/**
 * What the autoscaler puts back when a worker exits: the jobs its record names, and also any job
 * one of its BullMQ loops holds that the record does not name yet (taken in the moment before the
 * heartbeat wrote it). Real Redis and real BullMQ workers, whose force-close leaves their jobs
 * active under their locks as a kill -9 does; a driver that runs nothing reports the exit.
 */

const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const QUEUE = 'generate';

/** A driver with no processes: the test says when a worker exited. */
function exitingDriver() {
  let listener: (event: DriverEvent) => void = () => undefined;
  const driver = {
    slots: [],
    workers: () => [],
    freeSlots: () => [],
    usableSlotCount: () => 0,
    slotReports: () => [],
    start: () => {
      throw new Error('not in this test');
    },
    stop: async () => undefined,
    sync: () => undefined,
    onEvent(l: (event: DriverEvent) => void) {
      listener = l;
      return () => undefined;
    },
    close: async () => undefined,
  } satisfies WorkerDriver;
  const exit = (id: string) => {
    const worker: DriverWorker = { id, slot: 'cpu0', pid: null, phase: 'busy', currentJob: null, startedAt: Date.now(), adopted: false, model: null };
    listener({ type: 'exited', worker, code: null, signal: 'SIGKILL', expected: false, error: null });
  };
  return { driver, exit };
}

const record = (id: string, patch: Partial<WorkerRecord>): WorkerRecord => ({
  id,
  slot: 'cpu0',
  state: 'busy',
  currentJob: null,
  startedAt: Date.now(),
  lastSeenAt: Date.now(),
  jobsDone: 0,
  jobsFailed: 0,
  host: 'test',
  pid: 1,
  model: 'default',
  paused: null,
  currentJobToken: null,
  heldJobs: [],
  ...patch,
});

describe("a dead worker's jobs", () => {
  const prefix = `test-dead-${randomUUID().slice(0, 8)}`;
  const redis = createRedis(REDIS_URL, 'worker');
  const queue = new Queue(QUEUE, { connection: redis, prefix });
  const registry = new WorkerRegistry(redis, prefix);
  const recovery = new JobRecovery(redis, prefix);
  const { driver, exit } = exitingDriver();
  const workers: Worker[] = [];
  let letGo: () => void = () => undefined;
  const holding = new Promise<void>((resolve) => (letGo = resolve));

  /** A BullMQ worker that takes one job and holds it; `id` prefixes its lock tokens. */
  async function holder(): Promise<{ worker: Worker; jobId: string }> {
    const taken = new Promise<string>((resolve) => {
      const worker = new Worker(
        QUEUE,
        async (job) => {
          resolve(job.id as string);
          await holding;
        },
        { connection: createRedis(REDIS_URL, 'worker'), prefix, lockDuration: 60_000, stalledInterval: 60_000 },
      );
      worker.on('error', () => undefined);
      workers.push(worker);
    });
    await queue.add('generate', { prompt: 'x' }, { jobId: randomUUID() });
    const jobId = await taken;
    return { worker: workers.at(-1) as Worker, jobId };
  }

  const lock = { id: 'test', holds: () => true, verify: async () => true, onChange: () => undefined, start: () => undefined, release: async () => undefined } as unknown as LeaderLock;
  const idle: QueueLoad = { load: 0, waiting: 0, prioritized: 0, active: 0, delayedDue: 0, delayed: 0, paused: 0, oldestWaitingAt: null, at: Date.now() };
  let autoscaler: Autoscaler;

  beforeAll(() => {
    autoscaler = new Autoscaler({
      driver,
      registry,
      lock,
      load: { read: async () => idle },
      policy: { minWorkers: 0, maxWorkers: 1, initialWorkers: 0, targetJobsPerWorker: 1, upscaleDelayS: 0, downscaleDelayS: 0, downscaleToZeroDelayS: 0 },
      intervalMs: 60_000,
      logger: pino({ level: 'silent' }),
      recovery,
      queueOf: () => QUEUE,
    });
  });

  // Each case takes the job it adds: the jobs earlier cases put back leave the queue.
  beforeEach(async () => {
    await queue.drain();
  });

  afterAll(async () => {
    letGo();
    await Promise.all(workers.map((w) => w.close(true)));
    await recovery.close();
    await dropTestQueue(queue, redis, prefix);
  });

  it('a job taken before the record named it goes back by its lock token; another worker’s job stays where it is', async () => {
    const dead = await holder();
    const alive = await holder();
    await dead.worker.close(true);
    // The record knows the dead worker's loop but not yet its job.
    await registry.put(record('w-dead', { lockOwners: [dead.worker.id] }), 60_000);

    exit('w-dead');
    await autoscaler.settled();
    expect(await queue.getJobState(dead.jobId)).toBe('waiting');
    expect(await queue.getJobState(alive.jobId)).toBe('active');
    // Counted as an interruption, as BullMQ's stalled check would.
    expect((await queue.getJob(dead.jobId))?.stalledCounter).toBe(1);
    expect(await registry.get('w-dead')).toBeNull();
  });

  it("a job the record names with a token its lock no longer has goes back by the lock's token, when one of the worker's loops holds it", async () => {
    const retaken = await holder();
    await retaken.worker.close(true);
    // As after the worker put the job back and one of its loops took it again, before the heartbeat wrote that.
    await registry.put(record('w-retaken', { lockOwners: [retaken.worker.id], currentJob: retaken.jobId, heldJobs: [{ id: retaken.jobId, token: `${retaken.worker.id}:earlier` }] }), 60_000);

    exit('w-retaken');
    await autoscaler.settled();
    expect(await queue.getJobState(retaken.jobId)).toBe('waiting');
  });

  it('an older record without lock owners puts back only the jobs it names', async () => {
    const named = await holder();
    await named.worker.close(true);
    const unnamed = await holder();
    await unnamed.worker.close(true);
    const token = await redis.get(`${prefix}:${QUEUE}:${named.jobId}:lock`);
    await registry.put(record('w-old', { currentJob: named.jobId, currentJobToken: token, heldJobs: [{ id: named.jobId, token }] }), 60_000);

    exit('w-old');
    await autoscaler.settled();
    expect(await queue.getJobState(named.jobId)).toBe('waiting');
    // Left to its lock's lapse and a live worker's stalled check.
    expect(await queue.getJobState(unnamed.jobId)).toBe('active');
  });
});
