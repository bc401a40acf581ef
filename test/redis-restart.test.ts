import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { getJob, sleep, startScaledStack, submitJob, waitFor, type ScaledStack } from './helpers/autoscaler.js';
import { startOwnRedis, type OwnRedis } from './helpers/redis-server.js';
import { Redis } from 'ioredis';

/**
 * A Redis restart under load runs no job twice. Its own AOF redis-server (never the shared one),
 * restarted while two real worker processes are busy; every key takes a moment to load, so after
 * the restart Redis answers LOADING for a while, which is when a connection that skips the ready
 * check sends a finished job's completion and has it refused.
 */

const JOBS = 24;
const JOB = { prompt: 'a lighthouse', img_size: 256, num_inference_steps: 16 };

/** `job started` lines per job id in the workers' JSON logs: one per run of the pipeline. */
function startsPerJob(dir: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of fs.readFileSync(path.join(dir, 'workers.log'), 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const entry = JSON.parse(line) as { msg?: string; jobId?: string };
    if (entry.msg === 'job started' && entry.jobId) counts.set(entry.jobId, (counts.get(entry.jobId) ?? 0) + 1);
  }
  return counts;
}

describe.each(['shutdown', 'kill'] as const)('Redis %s and restart while workers are busy', (how) => {
  let redis: OwnRedis;
  let stack: ScaledStack;
  beforeAll(async () => {
    redis = await startOwnRedis({ keyLoadDelayUs: 50 });
    // Enough keys that loading them after the restart takes a noticeable time.
    const admin = new Redis(redis.url);
    await admin.call('DEBUG', 'POPULATE', '15000', 'filler');
    // DEBUG POPULATE is not written to the AOF: rewrite it so the keys come back at each restart.
    await admin.bgrewriteaof();
    await waitFor('the AOF rewrite', async () => /aof_rewrite_in_progress:0/.test(await admin.info('persistence')) && /aof_rewrite_scheduled:0/.test(await admin.info('persistence')));
    await admin.quit();
    stack = await startScaledStack(inject('tinyModelDir'), {
      REDIS_URL: redis.url,
      AUTOSCALER_INITIAL_WORKERS: '2',
      AUTOSCALER_MIN_WORKERS: '2',
      // The default lock outlives the restart: a duplicate here can only come from a refused completion.
      WORKER_LOCK_DURATION_MS: '30000',
      WORKER_STALLED_INTERVAL_MS: '1000',
    });
    await waitFor('two ready workers', async () => (await stack.registry.list()).filter((r) => r.state === 'ready').length === 2, 60_000);
  });
  afterAll(async () => {
    await stack?.close();
    await redis?.close();
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') console.error(stack.logs().slice(-20_000));
  });

  it('finishes every job, each run exactly once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < JOBS; i++) ids.push(await submitJob(stack.api.url, { ...JOB, seed: i }));
    // Restart once both workers have finished some jobs and are on others.
    await waitFor('some finished jobs', async () => (await stack.queue.getCompletedCount()) >= 4, 60_000, 20);
    await redis.stop(how);
    await sleep(500);
    await redis.start();
    await waitFor('Redis to load its data', async () => {
      const probe = new Redis(redis.url, { enableReadyCheck: true, maxRetriesPerRequest: 0, lazyConnect: true });
      try {
        await probe.connect();
        return true;
      } catch {
        return false;
      } finally {
        probe.disconnect();
      }
    });

    const outcomes = await waitFor(
      'every job to finish',
      async () => {
        const jobs = await Promise.all(ids.map((id) => getJob(stack.api.url, id).catch(() => ({ status: 'unreachable' }))));
        return jobs.every((j) => ['succeeded', 'failed', 'canceled'].includes(j.status)) ? jobs : null;
      },
      120_000,
      250,
    );
    expect(outcomes.map((j) => j.status)).toEqual(ids.map(() => 'succeeded'));
    const starts = startsPerJob(stack.dir);
    const twice = ids.filter((id) => (starts.get(id) ?? 0) !== 1).map((id) => `${id}: ${starts.get(id) ?? 0} runs`);
    expect(twice).toEqual([]);
    for (const id of ids) expect((await stack.queue.getJob(id))?.attemptsStarted, id).toBe(1);
  });
});
