import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { submitJob, waitFor, waitMidJob } from './helpers/autoscaler.js';
import { dropTestQueue } from './helpers/queue-teardown.js';
import { descendants, pidAlive, startService, waitForExit, type ServiceProcess } from './helpers/service-process.js';

/**
 * `npm start` stops once and cleanly however the signal arrives: to npm alone, to the whole
 * process group (a terminal's Ctrl-C), to the node process, or when npm itself is killed. The
 * running job finishes, then every process exits. A deliberate second signal forces: the workers
 * are killed and their jobs go back to the queue. Real processes: npm, its shell, node running
 * scripts/start.ts, and a worker on the tiny model.
 */

const JOB = { prompt: 'a slow lighthouse', img_size: 512, num_inference_steps: 300, seed: 3 };

interface Run {
  service: ServiceProcess;
  prefix: string;
  /** npm, its shell, the start.ts node, and the worker. */
  pids: number[];
  jobId: string;
  signaledAt: number;
}

describe('stopping npm start', () => {
  let dir: string;
  const runs: Run[] = [];
  const redis = createRedis('redis://127.0.0.1:6379', 'worker');

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-signals-'));
  });
  afterEach((ctx) => {
    const run = runs.at(-1);
    if (ctx.task.result?.state === 'fail' && run) console.error(fs.readFileSync(run.service.logFile, 'utf8').slice(-15_000));
  });
  afterAll(async () => {
    for (const run of runs) {
      for (const pid of run.pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
      await dropTestQueue(undefined, redis, run.prefix).catch(() => undefined);
    }
    redis.disconnect();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Starts `npm start` with one warm worker, submits a slow job, and calls `deliver` once it runs. */
  async function stopMidJob(name: string, deliver: (run: Omit<Run, 'signaledAt'>) => void | Promise<void>): Promise<Run> {
    const prefix = `test-sig-${randomUUID().slice(0, 8)}`;
    const service = await startService({
      logFile: path.join(dir, `${name}.log`),
      env: {
        PORT: '0',
        QUEUE_PREFIX: prefix,
        MODEL_DIR: inject('tinyModelDir'),
        MODEL_AUTO_TINY: 'false',
        STORAGE_LOCAL_DIR: path.join(dir, 'images'),
        AUTOSCALER_GPUS: 'none',
        AUTOSCALER_CPU_SLOTS: '1',
        AUTOSCALER_MIN_WORKERS: '1',
        AUTOSCALER_INITIAL_WORKERS: '1',
        AUTOSCALER_INTERVAL_MS: '200',
        WORKER_CPU_THREADS: '1',
        WORKER_HEARTBEAT_MS: '300',
        MAX_STEPS: '1000',
        MAX_IMAGE_SIZE: '512',
        LOG_LEVEL: 'info',
      },
    });
    const registry = new WorkerRegistry(redis, prefix);
    const worker = await waitFor('a ready worker', async () => (await registry.list()).find((r) => r.state === 'ready'), 90_000);
    const jobId = await submitJob(service.url, JOB);
    await waitMidJob(service.url, jobId);
    const pids = [service.pid, ...descendants(service.pid).filter((p) => !p.cmd.includes('esbuild')).map((p) => p.pid), worker.pid];
    const partial = { service, prefix, pids: [...new Set(pids)], jobId };
    const run: Run = { ...partial, signaledAt: Date.now() };
    runs.push(run);
    await deliver(partial);
    return run;
  }

  async function expectCleanStop(run: Run): Promise<void> {
    await waitForExit(run.pids, 60_000);
    const queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix: run.prefix });
    const job = await queue.getJob(run.jobId);
    // The job that was running when the signal came finished, once, before everything exited.
    expect(await job?.getState()).toBe('completed');
    expect(job?.attemptsStarted).toBe(1);
    expect(job?.finishedOn).toBeGreaterThan(run.signaledAt);
    const logs = run.service.logs();
    const stops = logs.filter((l) => l.process === 'start' && /stopping gracefully/.test(l.msg));
    expect(stops).toHaveLength(1);
    expect(logs.some((l) => l.process === 'start' && /forcing/.test(l.msg))).toBe(false);
    expect(logs.some((l) => l.process === 'start' && /^stopped: every worker finished/.test(l.msg))).toBe(true);
    await queue.close();
  }

  it('SIGINT to the process group (Ctrl-C in a terminal): one drain, the job finishes, all exit', async () => {
    const run = await stopMidJob('group', ({ service }) => void process.kill(-service.pgid, 'SIGINT'));
    await expectCleanStop(run);
  });

  it('SIGTERM to npm alone: nothing stays behind, the job finishes', async () => {
    const run = await stopMidJob('npm', ({ service }) => void process.kill(service.pid, 'SIGTERM'));
    await expectCleanStop(run);
  });

  it('SIGTERM to the node process: the job finishes, all exit', async () => {
    const run = await stopMidJob('node', ({ service }) => void process.kill(service.startPid() as number, 'SIGTERM'));
    await expectCleanStop(run);
  });

  it('npm killed outright: the service notices its parent is gone and stops the same way', async () => {
    const run = await stopMidJob('npm-killed', ({ service }) => void process.kill(service.pid, 'SIGKILL'));
    await expectCleanStop(run);
    expect(run.service.logs().some((l) => l.process === 'start' && l.signal === 'parent exited')).toBe(true);
  });

  it('a second Ctrl-C, deliberate, forces: the worker is killed and its job is back in the queue at once', async () => {
    const run = await stopMidJob('twice', async ({ service }) => {
      process.kill(-service.pgid, 'SIGINT');
      await new Promise((r) => setTimeout(r, 1500));
      process.kill(-service.pgid, 'SIGINT');
    });
    await waitForExit(run.pids, 30_000);
    const queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix: run.prefix });
    const job = await queue.getJob(run.jobId);
    expect(await job?.getState()).toBe('waiting');
    expect(job?.stalledCounter).toBe(1);
    const logs = run.service.logs().filter((l) => l.process === 'start');
    expect(logs.filter((l) => /stopping gracefully/.test(l.msg))).toHaveLength(1);
    expect(logs.filter((l) => /forcing/.test(l.msg))).toHaveLength(1);
    await queue.close();
  });
});
