import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { pino } from 'pino';
import { GENERATE_JOB, GENERATE_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { RetentionSweeper } from '../shared/retention.js';
import { S3ImageStore } from '../shared/storage/index.js';
import { sleep, waitFor } from './helpers/autoscaler.js';
import { dropTestQueue } from './helpers/queue-teardown.js';
import { startS3Server } from './helpers/s3-server.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';

/**
 * Finished jobs and their images go when JOB_KEEP_AGE_S says, idle or not: nothing else happens
 * in these tests after the jobs finish, yet the records and the S3 objects are removed.
 */

describe('retention on an idle service', () => {
  let s3: Awaited<ReturnType<typeof startS3Server>>;
  let stack: TestStack;
  beforeAll(async () => {
    s3 = await startS3Server();
    stack = await startStack(
      {
        STORAGE_DRIVER: 's3',
        S3_ENDPOINT: s3.endpoint,
        S3_BUCKET: 'retention',
        S3_CREATE_BUCKET: 'true',
        S3_ACCESS_KEY_ID: 'S3RVER',
        S3_SECRET_ACCESS_KEY: 'S3RVER',
        JOB_KEEP_AGE_S: '2',
        JOB_RETENTION_INTERVAL_S: '0.5',
        MODEL_DIR: inject('tinyModelDir'),
      },
      { notifier: false },
    );
  });
  afterAll(async () => {
    await stack?.close();
    await s3?.close();
  });

  it('removes a finished job and its stored images after JOB_KEEP_AGE_S, with no other activity', async () => {
    const res = await fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', img_size: 64, num_images: 2, num_inference_steps: 2 }) });
    const { id } = (await res.json()) as { id: string };
    expect((await pollJob(stack.api.url, id)).status).toBe('succeeded');
    expect(await stack.store.get(`jobs/${id}/0.png`)).not.toBeNull();
    expect(await stack.store.get(`jobs/${id}/1.png`)).not.toBeNull();
    await sleep(1000);
    // Still kept: younger than the keep age.
    expect((await fetch(`${stack.api.url}/v1/jobs/${id}`)).status).toBe(200);

    await waitFor('the job to expire', async () => (await fetch(`${stack.api.url}/v1/jobs/${id}`)).status === 404, 10_000, 100);
    expect(await stack.store.get(`jobs/${id}/0.png`)).toBeNull();
    expect(await stack.store.get(`jobs/${id}/1.png`)).toBeNull();
    expect(await stack.store.get(`jobs/${id}/result.json`)).toBeNull();
  });
});

describe('RetentionSweeper', () => {
  const prefix = `test-ret-${randomUUID().slice(0, 8)}`;
  const redis = createRedis('redis://127.0.0.1:6379', 'worker');
  const queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix });
  const deleted: string[] = [];
  let failDeletes = false;
  const store = {
    deletePrefix: async (p: string) => {
      if (failDeletes) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9000'), { code: 'ECONNREFUSED' });
      deleted.push(p);
    },
  };
  const sweeper = (keepCount = 1000) =>
    new RetentionSweeper({ connection: redis, prefix, store, keepAgeS: 3600, keepCount, intervalMs: 60_000, logger: pino({ level: 'silent' }) });

  afterAll(async () => dropTestQueue(queue, redis, prefix));

  /** Finished jobs written straight into BullMQ's sets, with finish times `ageS` seconds ago. */
  async function finished(count: number, ageS: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const job = await queue.add(GENERATE_JOB, { prompt: 'x' }, { jobId: randomUUID() });
      const at = Date.now() - ageS * 1000 + i;
      await redis.multi().lrem(queue.toKey('wait'), 0, job.id as string).zadd(queue.toKey('completed'), at, job.id as string).hset(queue.toKey(job.id as string), 'finishedOn', at).exec();
      ids.push(job.id as string);
    }
    return ids;
  }

  it('keeps the newest JOB_KEEP_COUNT, removes older ones with their files, and defers a job whose files cannot be deleted', async () => {
    const old = await finished(3, 100);
    const recent = await finished(2, 1);
    const report = await sweeper(2).sweep();
    expect(report).toEqual({ removed: 3, deferred: 0, swept: true });
    expect(deleted.sort()).toEqual(old.map((id) => `jobs/${id}/`).sort());
    for (const id of old) expect(await queue.getJob(id)).toBeUndefined();
    for (const id of recent) expect(await queue.getJob(id)).toBeDefined();

    failDeletes = true;
    const more = await finished(1, 10_000);
    expect(await sweeper(2).sweep()).toEqual({ removed: 0, deferred: 1, swept: true });
    expect(await queue.getJob(more[0] as string)).toBeDefined();
    failDeletes = false;
    expect(await sweeper(2).sweep()).toEqual({ removed: 1, deferred: 0, swept: true });
  });

  it('lets one process sweep at a time', async () => {
    await redis.set(`${prefix}:retention:lock`, 'someone-else', 'PX', 5000);
    await finished(1, 10_000);
    expect(await sweeper().sweep()).toEqual({ removed: 0, deferred: 0, swept: false });
    await redis.del(`${prefix}:retention:lock`);
    expect((await sweeper().sweep()).removed).toBe(1);
  });
});
