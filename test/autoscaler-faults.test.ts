import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { startApi, type RunningApi } from '../api/server.js';
import { LocalDriver } from '../autoscaler/local-driver.js';
import { cpuSlot } from '../autoscaler/slots.js';
import type { DriverEvent } from '../autoscaler/worker-driver.js';
import { loadConfig, type Config } from '../shared/config.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import {
  fastAutoscalerEnv,
  fileLogger,
  getJob,
  repoRoot,
  sleep,
  SLOW_JOB,
  startScaledStack,
  submitJob,
  waitFor,
  waitMidJob,
  type ScaledStack,
} from './helpers/autoscaler.js';
import { pollJob, silentLogger } from './helpers/stack.js';
import { dropTestQueue } from './helpers/queue-teardown.js';

/**
 * Faults on the way up and down: no job is lost and none runs twice except the one whose worker
 * died under it, which runs again to success. Real worker processes on the tiny model; a job of
 * hundreds of denoising steps at 512 px is slow enough to be caught mid-run (checked, not assumed).
 */

const dump = (logs: () => string) => (ctx: { task: { result?: { state?: string } } }) => {
  if (ctx.task.result?.state === 'fail') console.error(logs().slice(-20_000));
};

describe('a worker killed with -9 in the middle of a job', () => {
  let stack: ScaledStack;
  beforeAll(async () => {
    stack = await startScaledStack(inject('tinyModelDir'), {
      AUTOSCALER_CPU_SLOTS: '1',
      AUTOSCALER_MAX_WORKERS: '1',
      AUTOSCALER_DOWNSCALE_DELAY_S: '30',
      AUTOSCALER_DOWNSCALE_TO_ZERO_DELAY_S: '30',
    });
  });
  afterAll(async () => stack?.close());
  afterEach((ctx) => dump(() => stack.logs())(ctx));

  it('gets the job retried to success on a replacement worker', async () => {
    const id = await submitJob(stack.api.url, SLOW_JOB);
    const progress = await waitMidJob(stack.api.url, id);
    const victim = await waitFor('the busy worker record', async () => (await stack.registry.list()).find((r) => r.currentJob === id));
    expect(victim.state).toBe('busy');
    process.kill(victim.pid, 'SIGKILL');

    const exit = await waitFor('the exit of the killed worker', () =>
      stack.events.find((e): e is Extract<DriverEvent, { type: 'exited' }> => e.type === 'exited' && e.worker.id === victim.id),
    );
    expect({ expected: exit.expected, signal: exit.signal }).toEqual({ expected: false, signal: 'SIGKILL' });
    expect(stack.events.some((e) => e.type === 'backoff')).toBe(true);

    const job = await pollJob(stack.api.url, id, 100);
    expect(job.status).toBe('succeeded');
    const started = stack.events.filter((e): e is Extract<DriverEvent, { type: 'started' }> => e.type === 'started').map((e) => e.worker.id);
    expect(started).toHaveLength(2);
    expect(started[0]).toBe(victim.id);
    const replacement = started[1];
    const stored = await stack.queue.getJob(id);
    expect(stored?.returnvalue.workerId).toBe(replacement);
    // The kill came mid-run; the stalled check put the job back once and it started a second time.
    expect(progress.step).toBeLessThan(progress.total);
    expect(stored?.stalledCounter).toBe(1);
    expect(stored?.attemptsStarted).toBe(2);
    // The dead worker's record is gone at once, not after its heartbeat expires.
    expect((await stack.registry.list()).map((r) => r.id)).toEqual([replacement]);
    expect(stack.peakProcesses()).toBe(1);
  });
});

/** A LocalDriver on its own, with the API to submit jobs, for the stop paths. */
describe('stopping a busy worker', () => {
  let dir: string;
  let config: Readonly<Config>;
  let env: Record<string, string>;
  let api: RunningApi;
  let redis: ReturnType<typeof createRedis>;
  let registry: WorkerRegistry;
  let queue: Queue;
  let logFile: string;
  const drivers: LocalDriver[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-stop-'));
    env = fastAutoscalerEnv(dir, inject('tinyModelDir'));
    config = loadConfig(env);
    api = await startApi(config, silentLogger);
    redis = createRedis(config.redisUrl, 'worker');
    registry = new WorkerRegistry(redis, config.queuePrefix);
    queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix: config.queuePrefix });
  });
  afterAll(async () => {
    for (const d of drivers) await d.close();
    await api?.close();
    await dropTestQueue(queue, redis, config.queuePrefix);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach((ctx) => dump(() => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''))(ctx));

  function makeDriver(overrides: { stopGraceMs?: number; readyTimeoutMs?: number; env?: Record<string, string>; command?: string[] } = {}) {
    const { logger, file } = fileLogger(dir, `driver-${drivers.length}`);
    logFile = file;
    const driver = new LocalDriver({
      slots: [cpuSlot(0)],
      cwd: repoRoot,
      command: overrides.command,
      env: { ...process.env, ...env, ...overrides.env },
      stdout: fs.openSync(path.join(dir, 'workers.log'), 'a'),
      stopGraceMs: overrides.stopGraceMs ?? 60_000,
      readyTimeoutMs: overrides.readyTimeoutMs ?? 60_000,
      restartBackoffMs: 100,
      crashLoopRestarts: 3,
      crashLoopWindowMs: 60_000,
      logger,
    });
    const events: DriverEvent[] = [];
    driver.onEvent((e) => events.push(e));
    drivers.push(driver);
    return { driver, events };
  }

  const exitOf = (events: DriverEvent[], id: string) =>
    waitFor(`worker ${id} to exit`, () => events.find((e): e is Extract<DriverEvent, { type: 'exited' }> => e.type === 'exited' && e.worker.id === id));

  async function readyWorker(driver: LocalDriver) {
    const worker = driver.start(cpuSlot(0));
    await waitFor('the worker to be ready', async () => (await registry.list()).find((r) => r.id === worker.id && r.state === 'ready'));
    return worker;
  }

  it('SIGTERM during a job: the job completes before the worker exits', async () => {
    const { driver, events } = makeDriver();
    const worker = await readyWorker(driver);
    const id = await submitJob(api.url, SLOW_JOB);
    const progress = await waitMidJob(api.url, id);
    const stoppedAt = Date.now();
    const stopped = driver.stop(worker.id, 'test');

    // It says so while it drains: still on the job, taking no other.
    const draining = await waitFor('the draining record', async () => (await registry.list()).find((r) => r.id === worker.id && r.state === 'draining'));
    expect(draining.currentJob).toBe(id);
    await stopped;
    const exit = await exitOf(events, worker.id);
    const exitedAt = Date.now();
    expect({ expected: exit.expected, code: exit.code, signal: exit.signal }).toEqual({ expected: true, code: 0, signal: null });
    expect(events.some((e) => e.type === 'killed')).toBe(false);

    const stored = await queue.getJob(id);
    expect(await stored?.getState()).toBe('completed');
    expect(stored?.returnvalue.workerId).toBe(worker.id);
    expect(stored?.attemptsStarted).toBe(1);
    expect(progress.step).toBeLessThan(progress.total);
    // It was running when SIGTERM came and finished before the process was gone.
    expect(stored?.finishedOn).toBeGreaterThan(stoppedAt);
    expect(stored?.finishedOn).toBeLessThanOrEqual(exitedAt);
    expect((await getJob(api.url, id)).status).toBe('succeeded');
    expect(await registry.list()).toEqual([]);
  });

  it('a worker still busy after the grace period is killed, and its job returns to the queue and succeeds', async () => {
    const { driver, events } = makeDriver({ stopGraceMs: 500 });
    const first = await readyWorker(driver);
    const id = await submitJob(api.url, { ...SLOW_JOB, num_inference_steps: 400 });
    await waitMidJob(api.url, id);
    await driver.stop(first.id, 'test');
    expect(events.some((e) => e.type === 'killed' && e.worker.id === first.id)).toBe(true);
    const exit = await exitOf(events, first.id);
    expect(exit.signal).toBe('SIGKILL');
    // The job is not lost: it is still active under a lapsing lock, until a live worker's stalled check requeues it.
    expect(await (await queue.getJob(id))?.getState()).toBe('active');

    const second = await readyWorker(driver);
    const job = await pollJob(api.url, id, 100);
    expect(job.status).toBe('succeeded');
    const stored = await queue.getJob(id);
    expect(stored?.returnvalue.workerId).toBe(second.id);
    expect(stored?.stalledCounter).toBe(1);
    await driver.stop(second.id, 'test');
  });

  it('a worker whose model does not load is reported with its error, and its slot tries again after a backoff', async () => {
    const { driver, events } = makeDriver({ env: { MODEL_DIR: path.join(dir, 'no-such-model') } });
    const worker = driver.start(cpuSlot(0));
    const failed = await waitFor('the model failure', () =>
      events.find((e): e is Extract<DriverEvent, { type: 'model-unavailable' }> => e.type === 'model-unavailable'),
    );
    expect(failed.reason).toMatch(/^model could not be loaded: .*model_index\.json/);
    expect(failed.failures).toBe(1);
    const exit = await exitOf(events, worker.id);
    expect({ code: exit.code, expected: exit.expected }).toEqual({ code: 3, expected: false });
    // Held back for the backoff, not given up: the model may appear.
    expect(driver.slotReports()[0]).toMatchObject({ id: 'cpu0', state: 'backoff', reason: failed.reason, until: failed.until });
    expect(driver.usableSlotCount()).toBe(1);
    expect(events.some((e) => e.type === 'slot-failed' || e.type === 'crash-loop')).toBe(false);
    await waitFor('the slot to be free again', () => driver.freeSlots().length === 1, 10_000);
    const again = driver.start(cpuSlot(0));
    const second = await waitFor('the second model failure', () =>
      events.find((e): e is Extract<DriverEvent, { type: 'model-unavailable' }> => e.type === 'model-unavailable' && e.failures === 2),
    );
    // The wait doubles.
    await exitOf(events, again.id);
    expect(second.until - Date.now()).toBeGreaterThan(1000);
  });

  it('a worker whose autoscaler died and that no autoscaler adopts finishes and exits', { timeout: 90_000 }, async () => {
    // Its parent, as far as it knows: a process the test can kill.
    const parent = spawn('sleep', ['600'], { stdio: 'ignore' });
    const { driver, events } = makeDriver({ env: { WORKER_PARENT_PID: String(parent.pid), AUTOSCALER_LEADER_TTL_MS: '1000' } });
    const worker = await readyWorker(driver);
    parent.kill('SIGKILL');
    const exit = await exitOf(events, worker.id);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    const log = fs.readFileSync(path.join(dir, 'workers.log'), 'utf8');
    expect(log).toMatch(/no autoscaler adopted this worker within 10 s: finishing the current job and exiting/);
    expect(await registry.list()).toEqual([]);
  });

  it('a worker that never becomes ready is killed after the ready timeout and reported, not retried', async () => {
    const { driver, events } = makeDriver({ readyTimeoutMs: 500, command: [process.execPath, path.join(repoRoot, 'test/fixtures/hanging-worker.mjs')] });
    const worker = driver.start(cpuSlot(0));
    const failed = await waitFor('the slot failure', () => events.find((e): e is Extract<DriverEvent, { type: 'slot-failed' }> => e.type === 'slot-failed'));
    expect(failed.reason).toMatch(/did not become ready within/);
    const exit = await exitOf(events, worker.id);
    expect({ signal: exit.signal, expected: exit.expected }).toEqual({ signal: 'SIGKILL', expected: false });
    expect(driver.slotReports()[0]?.state).toBe('failed');
  });
});

describe('the autoscaler and workers that cannot run', () => {
  let stacks: ScaledStack[] = [];
  afterAll(async () => {
    for (const s of stacks) await s.close();
  });
  afterEach((ctx) => {
    for (const s of stacks) dump(() => s.logs())(ctx);
  });

  it('reports a crash loop instead of respawning forever, and keeps the job queued', async () => {
    const stack = await startScaledStack(
      inject('tinyModelDir'),
      { AUTOSCALER_CPU_SLOTS: '1', AUTOSCALER_MAX_WORKERS: '1', AUTOSCALER_RESTART_BACKOFF_MS: '100', AUTOSCALER_CRASH_LOOP_RESTARTS: '3', AUTOSCALER_CRASH_LOOP_WINDOW_S: '60' },
      { command: [process.execPath, path.join(repoRoot, 'test/fixtures/crashing-worker.mjs')] },
    );
    stacks.push(stack);
    const id = await submitJob(stack.api.url, { prompt: 'never runs', img_size: 64, num_inference_steps: 2 });
    const loop = await waitFor('the crash loop', () => stack.events.find((e): e is Extract<DriverEvent, { type: 'crash-loop' }> => e.type === 'crash-loop'));
    expect(loop.reason).toMatch(/3 crashes .*simulated crash/);
    await sleep(1500);
    const starts = stack.events.filter((e) => e.type === 'started');
    expect(starts).toHaveLength(3);
    // Restarts backed off, each wait longer than the one before (100 ms, 200 ms).
    const backoffs = stack.events.filter((e): e is Extract<DriverEvent, { type: 'backoff' }> => e.type === 'backoff').map((e) => e.crashes);
    expect(backoffs).toEqual([1, 2]);

    const view = (await (await fetch(`${stack.api.url}/v1/workers`)).json()) as any;
    expect(view.autoscaler.slots).toEqual([expect.objectContaining({ id: 'cpu0', state: 'crash-loop', reason: expect.stringMatching(/simulated crash/) })]);
    expect((await getJob(stack.api.url, id)).status).toBe('queued');
  });

  it('a model that does not load: its queued job fails with model_unavailable, new ones get 503, readiness and /v1/models say why, and the slot tries again until the model is there', async () => {
    // An export whose UNet weights are cut short: the API reads its config and graph inputs (not
    // the weights) and starts; the worker's ONNX Runtime session cannot load it.
    const modelDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-late-model-')), 'late-model');
    fs.cpSync(inject('tinyModelDir'), modelDir, { recursive: true });
    const weights = path.join(modelDir, 'unet', 'model.onnx_data');
    const whole = fs.readFileSync(weights);
    fs.truncateSync(weights, Math.floor(whole.length / 2));
    const stack = await startScaledStack(inject('tinyModelDir'), {
      AUTOSCALER_CPU_SLOTS: '1',
      AUTOSCALER_MAX_WORKERS: '1',
      AUTOSCALER_RESTART_BACKOFF_MS: '200',
      AUTOSCALER_MODEL_RETRY_MAX_S: '1',
      MODEL_DIR: modelDir,
    });
    stacks.push(stack);
    const name = 'late-model';
    const id = await submitJob(stack.api.url, { prompt: 'never runs', img_size: 64, num_inference_steps: 2 });
    const failed = await pollJob(stack.api.url, id, 100);
    expect(failed.status).toBe('failed');
    expect(failed.error).toEqual({ code: 'model_unavailable', message: expect.stringMatching(/^model could not be loaded: .*unet.*submit it again/s) });

    const refused = await fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', img_size: 64 }) });
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await refused.json()) as any).error).toMatchObject({ code: 'model_unavailable', field: 'model', message: expect.stringMatching(/cannot be loaded .*unet/s) });
    const sync = await fetch(`${stack.api.url}/v1/generate?prompt=x&img_size=64`);
    expect(sync.status).toBe(503);
    expect(((await sync.json()) as any).error.code).toBe('model_unavailable');

    const ready = await fetch(`${stack.api.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as any).checks.models[name]).toMatchObject({ ok: false, state: 'unavailable', error: expect.stringMatching(/unet/) });
    const models = await waitFor('the next try to be announced', async () => {
      const body = (await (await fetch(`${stack.api.url}/v1/models`)).json()) as any;
      return body.models[0].retry_at ? body : null;
    });
    expect(models.models[0]).toMatchObject({ name, default: true, state: 'unavailable', error: expect.stringMatching(/unet/) });

    // No job is waiting, yet the slot keeps trying: the model is found once it is there.
    await waitFor('a second try', () => stack.events.filter((e) => e.type === 'model-unavailable').length >= 2, 20_000);
    fs.writeFileSync(weights, whole);
    await waitFor('the model to be served', async () => {
      const body = (await (await fetch(`${stack.api.url}/v1/models`)).json()) as any;
      return body.models[0].state === 'available';
    }, 60_000, 200);
    expect((await fetch(`${stack.api.url}/readyz`)).status).toBe(200);
    const later = await submitJob(stack.api.url, { prompt: 'runs now', img_size: 64, num_inference_steps: 2 });
    expect((await pollJob(stack.api.url, later, 100)).status).toBe('succeeded');
    const view = (await (await fetch(`${stack.api.url}/v1/models`)).json()) as any;
    expect(view.models[0]).toMatchObject({ state: 'available', error: null, retry_at: null, capabilities: expect.objectContaining({ default_size: expect.any(Number) }) });
  });
});
