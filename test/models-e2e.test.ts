import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { BUILTIN_FINETUNED_SEED } from '../shared/model-catalogue.js';
import { createRedis, closeRedis } from '../shared/redis.js';
import { getJob, sleep, SLOW_JOB, startScaledStack, submitJob, waitFor, waitMidJob, type ScaledStack } from './helpers/autoscaler.js';
import { pollJob } from './helpers/stack.js';

/**
 * Two tiny models served at once, as `npm start` serves them with nothing configured: a base and a
 * "fine-tuned" one (other weights) whose trigger word is the tutorial's `unqtkn`; real worker
 * processes on ONE CPU slot, so the two models share it and the slot changes hands.
 */
const BASE = 'tiny-sd';
const TUNED = 'tiny-sd-unqtkn';
const TUTORIAL_PROMPT = 'photo of unqtkn dog having breakfast';

let dir: string;
let stack: ScaledStack;
let base: string;
const seenModels = new Set<string>();
let sampling = true;
let sampler: Promise<void> | undefined;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-models-'));
  const tuned = path.join(dir, TUNED);
  await writeTinyModel(tuned, { seed: BUILTIN_FINETUNED_SEED });
  const catalogue = path.join(dir, 'models.json');
  fs.writeFileSync(
    catalogue,
    JSON.stringify({
      models: [
        { name: BASE, dir: inject('tinyModelDir'), default: true },
        { name: TUNED, dir: tuned, trigger_words: ['unqtkn'] },
      ],
    }),
  );
  stack = await startScaledStack(inject('tinyModelDir'), {
    MODELS_FILE: catalogue,
    AUTOSCALER_CPU_SLOTS: '1',
    AUTOSCALER_MAX_WORKERS: '1',
    AUTOSCALER_SWAP_AFTER_S: '0',
    DEFAULT_STEPS: '4',
  });
  base = stack.api.url;
  // GET /v1/workers over the whole file: which models' workers it ever showed.
  sampler = (async () => {
    while (sampling) {
      const body = (await (await fetch(`${base}/v1/workers`)).json().catch(() => null)) as { workers?: { model: string }[] } | null;
      for (const w of body?.workers ?? []) seenModels.add(w.model);
      await sleep(100);
    }
  })();
});
afterAll(async () => {
  sampling = false;
  await sampler;
  await stack?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail') console.error(stack.logs().slice(-20_000));
});

async function pixels(url: string): Promise<Buffer> {
  const res = await fetch(url.startsWith('http') ? url : `${base}${url}`);
  expect(res.status).toBe(200);
  return (await sharp(Buffer.from(await res.arrayBuffer())).raw().toBuffer()) as Buffer;
}

/** Every job of each model's queue: how many times each started and whether it completed once. */
async function attempts(ids: string[]): Promise<Map<string, { started: number; state: string }>> {
  const redis = createRedis(stack.config.redisUrl, 'worker');
  const queues = stack.config.models.map((m) => new Queue(m.queue, { connection: redis, prefix: stack.config.queuePrefix }));
  try {
    const out = new Map<string, { started: number; state: string }>();
    for (const id of ids) {
      for (const queue of queues) {
        const job = await queue.getJob(id);
        if (job) out.set(id, { started: job.attemptsStarted, state: await job.getState() });
      }
    }
    return out;
  } finally {
    await Promise.all(queues.map((q) => q.close()));
    await closeRedis(redis);
  }
}

describe('two models side by side, routed by the prompt', () => {
  it('GET /v1/models lists both, the default marked, with trigger words, capabilities, workers and load', async () => {
    const res = await fetch(`${base}/v1/models`);
    expect(res.status).toBe(200);
    const { models } = (await res.json()) as { models: Array<Record<string, any>> };
    expect(models.map((m) => [m.name, m.default, m.trigger_words, m.queue])).toEqual([
      [BASE, true, [], 'generate'],
      [TUNED, false, ['unqtkn'], `generate.${TUNED}`],
    ]);
    for (const m of models) {
      expect(m.capabilities).toMatchObject({ default_size: 64, default_steps: 4, dtype: 'float32' });
      expect(m.capabilities.schedulers).toContain('PNDMScheduler');
      expect(m.load).toEqual({ queued: 0, running: 0, total: 0 });
    }
  });

  it('runs the tutorial prompt on the fine-tuned model and an unrelated one on the base, by POST, /dreambooth and by name', async () => {
    const tutorial = await submitJob(base, { prompt: TUTORIAL_PROMPT, seed: 7 });
    const unrelated = await submitJob(base, { prompt: 'a lighthouse at dusk', seed: 7 });
    const named = await submitJob(base, { prompt: TUTORIAL_PROMPT, seed: 7, model: BASE });
    const done = await Promise.all([tutorial, unrelated, named].map((id) => pollJob(base, id)));
    expect(done.map((j) => [j.status, j.model, j.routed_by])).toEqual([
      ['succeeded', TUNED, 'trigger word "unqtkn"'],
      ['succeeded', BASE, 'default'],
      ['succeeded', BASE, 'explicit'],
    ]);
    // Each ran on a worker of its own model.
    const workers = await attempts([tutorial, unrelated, named]);
    expect([...workers.values()].map((w) => w.state)).toEqual(['completed', 'completed', 'completed']);

    // The same prompt and seed on the two models: different weights, different pixels.
    const [tunedPixels, basePixels] = await Promise.all([pixels(done[0]!.outputs.images[0].url), pixels(done[2]!.outputs.images[0].url)]);
    expect(tunedPixels.length).toBe(basePixels.length);
    expect(tunedPixels.equals(basePixels)).toBe(false);

    // The synchronous routes route the same way and say where the job is.
    const sync = await fetch(`${base}/dreambooth?prompt=${encodeURIComponent(TUTORIAL_PROMPT)}&img_size=64&seed=7`);
    expect(sync.status).toBe(200);
    expect(sync.headers.get('content-type')).toBe('image/png');
    const location = sync.headers.get('content-location');
    expect(location).toMatch(/^\/v1\/jobs\/[0-9a-f-]{36}$/);
    const syncJob = (await (await fetch(`${base}${location}`)).json()) as Record<string, any>;
    expect([syncJob.model, syncJob.routed_by]).toEqual([TUNED, 'trigger word "unqtkn"']);
    // Same model, prompt and seed as the POSTed job: the same pixels.
    expect((await sharp(Buffer.from(await sync.arrayBuffer())).raw().toBuffer()).equals(tunedPixels)).toBe(true);
    const generated = await fetch(`${base}/v1/generate?prompt=a+red+fox&model=${TUNED}&seed=3`);
    expect(generated.status).toBe(200);
    const generatedJob = await getJob(base, (generated.headers.get('content-location') as string).split('/').pop() as string);
    expect([generatedJob.model, generatedJob.routed_by]).toEqual([TUNED, 'explicit']);

    // An unknown model: 400 naming the field, nothing queued.
    const bad = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', model: 'sdxl' }) });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(await bad.json())).toMatch(/"field":"model".*unknown model \\"sdxl\\"/);

    // GET /v1/workers showed workers of both models while they ran.
    await waitFor('workers of both models in GET /v1/workers', () => seenModels.has(BASE) && seenModels.has(TUNED), 10_000);
  });

  it('with one slot and both models loaded with work, every job finishes, each exactly once, and the queue position is per model', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      ids.push(await submitJob(base, { prompt: `unqtkn dog number ${i}`, img_size: 128, num_inference_steps: 8, seed: i }));
      ids.push(await submitJob(base, { prompt: `a cat number ${i}`, img_size: 128, num_inference_steps: 8, seed: i }));
    }
    const early = await Promise.all(ids.map((id) => getJob(base, id)));
    // Positions count within each model's own queue: no position reaches the two queues' total.
    const positions = early.filter((j) => j.status === 'queued').map((j) => j.queue_position as number);
    expect(Math.max(...positions)).toBeLessThan(4);
    const done = await Promise.all(ids.map((id) => pollJob(base, id)));
    expect(done.map((j) => j.status)).toEqual(Array(8).fill('succeeded'));
    expect(done.filter((j) => j.model === TUNED)).toHaveLength(4);
    const runs = await attempts(ids);
    expect([...runs.values()].map((r) => r.started)).toEqual(Array(8).fill(1));
    // Never two workers at once on the one slot.
    expect(stack.peakProcesses()).toBe(1);
  });

  it('a worker killed with -9 while it drains for a hand-over: its job is run again to success once, and no job is lost', async () => {
    const slow = await submitJob(base, { ...SLOW_JOB, prompt: 'a slow lighthouse on the base model' });
    await waitMidJob(base, slow);
    const running = stack.running.driver.workers().find((w) => w.currentJob === slow || w.model === BASE);
    expect(running?.model).toBe(BASE);
    // The fine-tuned model gets work: the base worker is asked to drain and hand its slot over.
    const waiting = [await submitJob(base, { prompt: 'unqtkn dog at noon', seed: 1 }), await submitJob(base, { prompt: 'unqtkn dog at night', seed: 2 })];
    await waitFor('the base worker to drain for the hand-over', () => stack.running.driver.workers().find((w) => w.id === running!.id && w.phase === 'draining'), 20_000, 20);
    expect(stack.events.some((e) => e.type === 'stopping' && e.worker.id === running!.id && e.reason === `hand-over to model ${TUNED}`)).toBe(true);
    process.kill(running!.pid as number, 'SIGKILL');
    const done = await Promise.all([slow, ...waiting].map((id) => pollJob(base, id)));
    expect(done.map((j) => [j.status, j.model])).toEqual([
      ['succeeded', BASE],
      ['succeeded', TUNED],
      ['succeeded', TUNED],
    ]);
    const runs = await attempts([slow, ...waiting]);
    // The killed job started twice (the kill, then the retry) and completed once; the others once.
    expect([...runs.values()].map((r) => [r.state, r.started])).toEqual([
      ['completed', 2],
      ['completed', 1],
      ['completed', 1],
    ]);
  });
});
