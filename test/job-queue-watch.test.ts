import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { BullJobQueue, type JobRecord } from '../shared/job-queue.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { dropTestQueue } from './helpers/queue-teardown.js';
import { jobPayload } from './helpers/job-payload.js';

/**
 * The API's waits against the real Redis and BullMQ events. Progress re-reads are stretched to ten
 * minutes here, and so is the safety poll: a wait that ends within the test proves the job's end
 * came through its own event, not a timer.
 */

const TEN_MINUTES = 600_000;
const payload = jobPayload({ prompt: 'a red fox', width: 64, height: 64, guidanceScale: 7.5, model: 'tiny' });

let prefix: string;
let connection: ReturnType<typeof createRedis>;
let eventsConnection: ReturnType<typeof createRedis>;
let workerConnection: ReturnType<typeof createRedis>;
let jobs: BullJobQueue;
let worker: Worker | undefined;
let workerOwnConnection: ReturnType<typeof createRedis> | undefined;
let inspect: Queue;

beforeEach(async () => {
  prefix = `test-watch-${randomUUID().slice(0, 8)}`;
  connection = createRedis('redis://127.0.0.1:6379', 'api');
  eventsConnection = createRedis('redis://127.0.0.1:6379', 'subscriber');
  workerConnection = createRedis('redis://127.0.0.1:6379', 'worker');
  jobs = new BullJobQueue({
    connection,
    eventsConnection,
    prefix,
    jobs: { attempts: 1, backoffMs: 0, keepAgeS: 3600, keepCount: 100 },
    watchTiming: { throttleMs: TEN_MINUTES, safetyPollMs: TEN_MINUTES },
  });
  await jobs.ready();
  inspect = new Queue(GENERATE_QUEUE, { connection: workerConnection, prefix });
});

afterEach(async () => {
  await worker?.close();
  worker = undefined;
  if (workerOwnConnection) await closeRedis(workerOwnConnection);
  workerOwnConnection = undefined;
  await jobs.close();
  await closeRedis(connection);
  await closeRedis(eventsConnection);
  await dropTestQueue(inspect, workerConnection, prefix);
});

/** A worker that reports progress along the way, then finishes the job as `finish` says. */
function startWorker(finish: 'complete' | 'fail') {
  workerOwnConnection = createRedis('redis://127.0.0.1:6379', 'worker');
  worker = new Worker(
    GENERATE_QUEUE,
    async (job) => {
      for (let step = 1; step <= 3; step++) await job.updateProgress({ step, total: 3 });
      if (finish === 'fail') throw new Error('bad_input: nope');
      return { images: [], seed: 1, workerId: 'test', timingsMs: {} };
    },
    { connection: workerOwnConnection, prefix },
  );
}

it('sees a job succeed from its completed event, with progress reads held back by the throttle', async () => {
  const queued = await jobs.enqueue(payload);
  const reads = vi.spyOn(jobs, 'get');
  const waiting = jobs.waitForFinish(queued.id, 30_000);
  startWorker('complete');
  const finished = await waiting;
  expect(finished?.status).toBe('succeeded');
  // The first read (queued), maybe one from the job starting, and the read the end asked for;
  // never one per progress event.
  expect(reads.mock.calls.length).toBeGreaterThanOrEqual(2);
  expect(reads.mock.calls.length).toBeLessThanOrEqual(3);
});

it('sees a job fail from its failed event', async () => {
  const queued = await jobs.enqueue(payload);
  const waiting = jobs.waitForFinish(queued.id, 30_000);
  startWorker('fail');
  const finished = (await waiting) as JobRecord;
  expect(finished.status).toBe('failed');
  expect(finished.error?.code).toBe('bad_input');
});

it('passes the end to a watcher even while progress is being throttled', async () => {
  const queued = await jobs.enqueue(payload);
  const statuses: string[] = [];
  const ended = new Promise<void>((resolve) => {
    const stop = jobs.watch(queued.id, (record) => {
      statuses.push(record?.status ?? 'gone');
      if (record?.status === 'succeeded') {
        stop();
        resolve();
      }
    });
  });
  startWorker('complete');
  await ended;
  expect(statuses[0]).toBe('queued');
  expect(statuses.at(-1)).toBe('succeeded');
});
