import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadPipeline } from '../worker/pipeline/index.js';
import type { GenerateOptions, GenerateRequest, Pipeline } from '../worker/pipeline/types.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';
import { until } from './helpers/webhook-receiver.js';

/**
 * Cancel, deadlines, progress over SSE, Prefer: wait and the synchronous wrapper's disconnects,
 * against the real queue and one in-process worker whose pipeline is wrapped to count steps.
 */

interface Run {
  prompt: string;
  steps: number;
  /** Steps done when the signal fired; null when it never did. */
  stepsAtAbort: number | null;
  outcome: 'running' | 'ok' | 'error';
}

/** The real pipeline, recording each run's steps and when its AbortSignal fired. */
class CountingPipeline implements Pipeline {
  readonly runs: Run[] = [];
  constructor(private readonly inner: Pipeline) {}
  get capabilities() {
    return this.inner.capabilities;
  }
  async generate(request: GenerateRequest, options: GenerateOptions = {}) {
    const run: Run = { prompt: request.prompt, steps: 0, stepsAtAbort: null, outcome: 'running' };
    this.runs.push(run);
    options.signal?.addEventListener('abort', () => {
      run.stepsAtAbort = run.steps;
    });
    try {
      const result = await this.inner.generate(request, {
        ...options,
        onStep: (step, total) => {
          run.steps = step;
          options.onStep?.(step, total);
        },
      });
      run.outcome = 'ok';
      return result;
    } catch (err) {
      run.outcome = 'error';
      throw err;
    }
  }
  release() {
    return this.inner.release();
  }
}

/** ~10 s on the tiny model: long enough to catch it running, many steps to stop between. */
const LONG = { img_size: 512, num_inference_steps: 900, scheduler: 'ddim' };
const SHORT = { img_size: 64, num_inference_steps: 2 };

let stack: TestStack;
let pipeline: CountingPipeline;
let base: string;
let dir: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-control-'));
  pipeline = new CountingPipeline(await loadPipeline(inject('tinyModelDir'), { cpuThreads: 1 }));
  stack = await startStack(
    { MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, MAX_STEPS: '900', SYNC_TIMEOUT_S: '30' },
    { pipeline, notifier: false },
  );
  base = stack.api.url;
});
afterAll(async () => {
  await stack?.close();
  await pipeline?.release();
  await fs.rm(dir, { recursive: true, force: true });
});

const submit = async (body: Record<string, unknown>, headers: Record<string, string> = {}) => {
  const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { res, job: (await res.json()) as Record<string, any> };
};
const getJob = async (id: string) => (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as Record<string, any>;
const cancel = (id: string) => fetch(`${base}/v1/jobs/${id}/cancel`, { method: 'POST' });
const runOf = (prompt: string) => pipeline.runs.find((r) => r.prompt === prompt);

/** Starts a long job and resolves once it is running past its first steps. */
async function occupyWorker(prompt: string) {
  const { job } = await submit({ prompt, ...LONG });
  await until(() => getJob(job.id), (j) => j.status === 'running' && (j.progress?.step ?? 0) >= 3);
  return job.id as string;
}

/** Reads a server-sent event stream to its end. */
async function readEvents(url: string, onEvent?: (event: { name: string; data: any }) => void) {
  const res = await fetch(url, { headers: { accept: 'text/event-stream' } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const events: { name: string; data: any }[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let cut: number;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const name = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (name && data) {
        const event = { name, data: JSON.parse(data) };
        events.push(event);
        onEvent?.(event);
      }
    }
  }
  return events;
}

describe('cancel', () => {
  it('removes a queued job (it never runs), stops a running one within a step, and the worker takes the next job', async () => {
    const longId = await occupyWorker('long to cancel');
    const { job: queued } = await submit({ prompt: 'never runs', ...SHORT });
    expect((await getJob(queued.id)).queue_position).toBe(0);

    const removed = await cancel(queued.id);
    expect(removed.status).toBe(200);
    const removedView = (await removed.json()) as any;
    expect(removedView).toMatchObject({ id: queued.id, status: 'canceled', started_at: null, error: { code: 'canceled' } });
    expect(removedView.finished_at).not.toBeNull();
    expect((await getJob(queued.id)).status).toBe('canceled');

    const stopped = await cancel(longId);
    expect([200, 202]).toContain(stopped.status);
    const long = await pollJob(base, longId);
    expect(long).toMatchObject({ status: 'canceled', error: { code: 'canceled' }, attempts: { made: 1 } });
    const run = runOf('long to cancel')!;
    expect(run.outcome).toBe('error');
    expect(run.stepsAtAbort).not.toBeNull();
    // The denoising loop stops at the next step boundary: at most one more step after the signal.
    expect(run.steps - run.stepsAtAbort!).toBeLessThanOrEqual(1);
    expect(run.steps).toBeLessThan(900);

    const { job: next } = await submit({ prompt: 'next in line', ...SHORT });
    expect((await pollJob(base, next.id)).status).toBe('succeeded');
    expect(runOf('next in line')?.outcome).toBe('ok');
    expect(runOf('never runs')).toBeUndefined();
    // The canceled job stays canceled (not retried, not resurrected).
    expect((await getJob(queued.id)).status).toBe('canceled');
  });

  it('answers 200 again for a canceled job, 409 for a finished one and 404 for an unknown one', async () => {
    const { job } = await submit({ prompt: 'done already', ...SHORT });
    await pollJob(base, job.id);
    const finished = await cancel(job.id);
    expect(finished.status).toBe(409);
    expect(((await finished.json()) as any).error.code).toBe('job_finished');
    expect((await cancel('00000000-0000-0000-0000-000000000000')).status).toBe(404);

    const longId = await occupyWorker('cancel twice');
    await cancel(longId);
    await pollJob(base, longId);
    const again = await cancel(longId);
    expect(again.status).toBe(200);
    expect(((await again.json()) as any).status).toBe('canceled');
  });
});

describe('deadlines', () => {
  it('fails a job past its timeout_s with code timeout, without retrying it, and frees the worker', async () => {
    const { job } = await submit({ prompt: 'too slow', ...LONG, timeout_s: 1 });
    const done = await pollJob(base, job.id);
    expect(done).toMatchObject({ status: 'failed', error: { code: 'timeout' }, attempts: { made: 1, max: 3 }, input: { timeout_s: 1 } });
    expect(runOf('too slow')?.stepsAtAbort).not.toBeNull();
    const { job: next } = await submit({ prompt: 'after the deadline', ...SHORT });
    expect((await pollJob(base, next.id)).status).toBe('succeeded');
  });
});

describe('server-sent events', () => {
  it('streams queued, running with progress, then exactly one succeeded, and ends', async () => {
    const longId = await occupyWorker('ahead in the queue');
    const { job } = await submit({ prompt: 'watched', img_size: 512, num_inference_steps: 120, scheduler: 'ddim' });
    let canceledAhead = false;
    const arrivals: number[] = [];
    const events = await readEvents(`${base}/v1/jobs/${job.id}/events`, (event) => {
      if (event.name === 'running') arrivals.push(Date.now());
      // Once the stream has shown the job waiting, let it run.
      if (event.name === 'queued' && !canceledAhead) {
        canceledAhead = true;
        void cancel(longId);
      }
    });
    const names = events.map((e) => e.name);
    expect(names[0]).toBe('queued');
    expect(events[0]!.data.queue_position).toBe(0);
    expect(names.at(-1)).toBe('succeeded');
    expect(names.filter((n) => ['succeeded', 'failed', 'canceled'].includes(n))).toHaveLength(1);
    // Status only moves forward: queued…, running…, succeeded.
    expect(names.join(' ')).toMatch(/^(queued )+(running )+succeeded$/);
    for (const e of events) expect(e.data.status).toBe(e.name);
    const steps = events.filter((e) => e.name === 'running').map((e) => e.data.progress?.step ?? 0);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    expect(events.at(-1)!.data).toEqual(await getJob(job.id));
    expect(events.at(-1)!.data.progress).toEqual({ step: 120, total: 120 });
    // Progress is throttled to about five events a second (120 steps would be 120 events).
    const runningFor = (arrivals.at(-1)! - arrivals[0]!) / 1000;
    expect(arrivals.length).toBeLessThanOrEqual(Math.ceil(runningFor * 5) + 2);
  });

  it('gives a reconnecting client the current state first: one final event for a finished job', async () => {
    const { job } = await submit({ prompt: 'finished before watching', ...SHORT });
    await pollJob(base, job.id);
    const events = await readEvents(`${base}/v1/jobs/${job.id}/events`);
    expect(events.map((e) => e.name)).toEqual(['succeeded']);
  });

  it('ends with canceled for a job canceled while watched', async () => {
    const longId = await occupyWorker('watched then canceled');
    let sent = false;
    const events = await readEvents(`${base}/v1/jobs/${longId}/events`, (event) => {
      if (event.name === 'running' && !sent) {
        sent = true;
        void cancel(longId);
      }
    });
    expect(events[0]!.name).toBe('running');
    expect(events.at(-1)).toMatchObject({ name: 'canceled', data: { status: 'canceled' } });
  });

  it('answers 404 for an unknown job', async () => {
    expect((await fetch(`${base}/v1/jobs/00000000-0000-0000-0000-000000000000/events`)).status).toBe(404);
  });
});

describe('waiting for the result', () => {
  it('POST with Prefer: wait=N answers 201 with the finished job', async () => {
    const { res, job } = await submit({ prompt: 'wait for me', ...SHORT }, { prefer: 'wait=30' });
    expect(res.status).toBe(201);
    expect(res.headers.get('preference-applied')).toBe('wait=30');
    expect(res.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
    expect(job.status).toBe('succeeded');
    expect(job.outputs.images).toHaveLength(1);
  });

  it('POST with Prefer: wait=N answers 202 with the job still queued when N passes first', async () => {
    const longId = await occupyWorker('blocking the wait');
    const { res, job } = await submit({ prompt: 'not in time', ...SHORT }, { prefer: 'wait=1' });
    expect(res.status).toBe(202);
    expect(res.headers.get('preference-applied')).toBe('wait=1');
    expect(job.status).toBe('queued');
    await cancel(job.id);
    await cancel(longId);
    await pollJob(base, longId);
  });

  it('cancels the job of a synchronous client that disconnects before it starts', async () => {
    const longId = await occupyWorker('blocking the sync client');
    const client = new AbortController();
    const request = fetch(`${base}/v1/generate?prompt=orphan&img_size=64`, { signal: client.signal }).catch(() => null);
    const waiting = await until(
      () => stack.queue.getWaiting(),
      (jobs) => jobs.some((j) => j.data.prompt === 'orphan'),
    );
    const orphanId = waiting.find((j) => j.data.prompt === 'orphan')!.id as string;
    client.abort();
    await request;
    const orphan = await until(() => getJob(orphanId), (j) => j.status !== 'queued');
    expect(orphan.status).toBe('canceled');
    await cancel(longId);
    await pollJob(base, longId);
    const { job: next } = await submit({ prompt: 'after the orphan', ...SHORT });
    await pollJob(base, next.id);
    expect(runOf('orphan')).toBeUndefined();
  });
});
