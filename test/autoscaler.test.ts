import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { TickReport } from '../autoscaler/autoscaler.js';
import { pollJob } from './helpers/stack.js';
import { getJob, sleep, startScaledStack, submitJob, waitFor, type ScaledStack } from './helpers/autoscaler.js';

/**
 * From zero to the maximum and back, with real worker processes on the tiny model: three CPU
 * slots, max 2, min 0. The scenarios run in order on one autoscaler: a cold start, a burst, the idle tail.
 */
let stack: ScaledStack;
let base: string;
const ticks: TickReport[] = [];

beforeAll(async () => {
  // Three slots but max 2: the maximum, not the slots, is what holds the count at two.
  stack = await startScaledStack(inject('tinyModelDir'), { AUTOSCALER_CPU_SLOTS: '3', AUTOSCALER_MAX_WORKERS: '2' });
  base = stack.api.url;
  stack.running.autoscaler.onTick((t) => ticks.push(t));
});
afterAll(async () => {
  await stack?.close();
});
afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail' || process.env['SHOW_AUTOSCALER_LOGS']) console.error(stack.logs().slice(-20_000));
});

describe('autoscaler with local worker processes', () => {
  it('holds no worker while the queue is empty, then starts one for the first job at once and the job succeeds', async () => {
    await waitFor('the autoscaler to lead', () => stack.running.autoscaler.isLeader, 10_000);
    await waitFor('a few idle ticks', () => ticks.length >= 5, 10_000);
    expect(stack.running.driver.workers()).toHaveLength(0);
    expect(await stack.registry.list()).toEqual([]);
    expect(ticks.every((t) => t.decision.target === 0)).toBe(true);

    const id = await submitJob(base, { prompt: 'a red fox', img_size: 64, num_inference_steps: 4, seed: 3 });
    const job = await pollJob(base, id);
    expect(job.status).toBe('succeeded');

    const started = stack.events.filter((e) => e.type === 'started');
    expect(started).toHaveLength(1);
    // The decision for the job was the cold-start fast path, not the upscale delay.
    expect(ticks.find((t) => t.decision.action === 'up')?.decision.reason).toBe('cold-start');
    const record = await stack.queue.getJob(id);
    expect(record?.returnvalue.workerId).toBe(started[0]?.type === 'started' ? started[0].worker.id : undefined);
    expect(record?.attemptsStarted).toBe(1);
  });

  it('runs a burst on exactly two workers at the peak (never three) and every job exactly once', async () => {
    // Each job takes most of a second on one CPU thread: the burst outlasts the second worker's start.
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await submitJob(base, { prompt: `burst ${i}`, img_size: 512, num_inference_steps: 50, seed: i }));
    let peakBusy = 0;
    const watching = (async () => {
      while (!(await Promise.all(ids.map((id) => getJob(base, id)))).every((j) => j.status === 'succeeded' || j.status === 'failed')) {
        const records = await stack.registry.list();
        peakBusy = Math.max(peakBusy, records.filter((r) => r.state === 'busy').length);
        expect(records.length).toBeLessThanOrEqual(2);
        expect(new Set(records.map((r) => r.slot)).size).toBe(records.length);
        await sleep(50);
      }
    })();
    await watching;

    const jobs = await Promise.all(ids.map((id) => stack.queue.getJob(id)));
    expect(jobs.map((j) => j?.finishedOn && j.returnvalue ? 'succeeded' : j?.failedReason)).toEqual(ids.map(() => 'succeeded'));
    // Exactly once: one start each, no stall.
    expect(jobs.map((j) => j?.attemptsStarted)).toEqual(ids.map(() => 1));
    expect(jobs.map((j) => j?.stalledCounter ?? 0)).toEqual(ids.map(() => 0));
    // Both slots worked, and never was a third worker alive.
    expect(new Set(jobs.map((j) => j?.returnvalue.workerId)).size).toBe(2);
    expect(peakBusy).toBe(2);
    expect(stack.peakProcesses()).toBe(2);
    expect(stack.peakRegistered()).toBe(2);
    expect(Math.max(...ticks.map((t) => t.decision.target))).toBe(2);
  });

  it('goes back to zero workers when idle, after the downscale delays, each worker exiting cleanly', async () => {
    const idleSince = Date.now();
    const from = ticks.length;
    await waitFor('zero workers', async () => stack.running.driver.workers().length === 0 && (await stack.registry.list()).length === 0, 30_000);
    const tookMs = Date.now() - idleSince;
    // 2 → 1 after DOWNSCALE_DELAY_S at the earliest; it never happened sooner.
    expect(tookMs).toBeGreaterThanOrEqual(1500 - 200);
    const downs = ticks.slice(from).filter((t) => t.decision.action === 'down').map((t) => [t.decision.target, t.decision.reason]);
    expect(downs).toEqual([
      [1, 'downscale'],
      [0, 'downscale-to-zero'],
    ]);
    const exits = stack.events.filter((e) => e.type === 'exited');
    expect(exits.length).toBe(stack.events.filter((e) => e.type === 'started').length);
    for (const e of exits) expect(e.type === 'exited' && { expected: e.expected, code: e.code }).toEqual({ expected: true, code: 0 });
    // Still zero a moment later: no flapping back up.
    await sleep(1000);
    expect(stack.running.driver.workers()).toHaveLength(0);
    const status = await stack.registry.autoscaler();
    expect(status).toMatchObject({ target: 0, load: 0, bounds: { min: 0, max: 2 } });
  });
});
