/**
 * Filters and prompt variations through the whole service (HTTP → queue → worker → storage →
 * HTTP), on tiny models with a passing safety checker (the default), one that flags everything,
 * and none at all: what the job view says per image, what the API refuses, that variants run as
 * one batch, and that a flagged image is never returned as anything but black.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { GENERATE_JOB } from '../shared/queues.js';
import { createFilterSet } from '../worker/filters/registry.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';

type Job = Record<string, any>;
const dirs: string[] = [];
const stacks: TestStack[] = [];

async function model(options: Parameters<typeof writeTinyModel>[1]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sd-filters-e2e-'));
  dirs.push(dir);
  await writeTinyModel(dir, options);
  return dir;
}

async function stackOn(modelDir: string, env: Record<string, string> = {}, options: Parameters<typeof startStack>[1] = {}) {
  const storage = await mkdtemp(path.join(tmpdir(), 'sd-filters-e2e-store-'));
  dirs.push(storage);
  const stack = await startStack({ MODEL_DIR: modelDir, STORAGE_LOCAL_DIR: storage, DEFAULT_STEPS: '2', ...env }, { notifier: false, ...options });
  stacks.push(stack);
  return stack;
}

afterAll(async () => {
  await Promise.allSettled(stacks.map((s) => s.close()));
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function submit(stack: TestStack, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${stack.api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function run(stack: TestStack, body: Record<string, unknown>): Promise<Job> {
  const res = await submit(stack, body);
  expect(res.status, await res.clone().text()).toBe(202);
  const job = await pollJob(stack.api.url, ((await res.json()) as Job).id);
  expect(job.status, JSON.stringify(job.error)).toBe('succeeded');
  return job;
}

/** `url`: the API's base and an image link (relative without PUBLIC_URL). */
async function pixels(url: string): Promise<Buffer> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return (await sharp(Buffer.from(await res.arrayBuffer())).raw().toBuffer({ resolveWithObject: true })).data;
}

describe('a model whose export has a safety checker (the default tiny model)', () => {
  let stack: TestStack;
  beforeAll(async () => {
    // Besides the built-in filters, an operator's own: it screens out the image of seed 5.
    stack = await stackOn(inject('tinyModelDir'), {}, {
      filters: (pipeline, config) =>
        createFilterSet(pipeline, { grayscaleMaxChroma: config.filters.grayscaleMaxChroma }).register({
          name: 'no_five',
          check: (_image, context) => (context.seed === 5 ? { passed: false, detail: 'seed 5' } : { passed: true }),
        }),
    });
  });

  it('runs the checker by default and reports each image’s verdicts, prompt, seed and tries', async () => {
    const job = await run(stack, { prompt: 'a red fox', num_images: 2, seed: 11 });
    expect(job.input).toMatchObject({ filters: null, prompt_variations: false });
    expect(job.outputs.images).toEqual([0, 1].map((i) =>
      expect.objectContaining({
        seed: 11 + i,
        prompt: 'a red fox',
        nsfw_content_detected: false,
        filters: { nsfw: { passed: true } },
        tries: 1,
        blocked: false,
      }),
    ));
  });

  it('accepts filters: ["grayscale"] and reports its verdict (the checker then does not run)', async () => {
    const job = await run(stack, { prompt: 'a red fox', filters: ['grayscale'], seed: 3 });
    expect(job.input.filters).toEqual(['grayscale']);
    const [image] = job.outputs.images;
    expect(image.nsfw_content_detected).toBeNull();
    expect(image.filters).toEqual({ grayscale: { passed: true, score: expect.any(Number), threshold: 12 } });
    expect(image.filters.grayscale.score).toBeGreaterThan(12); // the tiny model draws in colour
  });

  it('runs no filter with filters: [], and an operator’s filter by its name', async () => {
    const none = await run(stack, { prompt: 'x', filters: [] });
    expect(none.outputs.images[0]).toMatchObject({ filters: {}, nsfw_content_detected: null });
    const custom = await run(stack, { prompt: 'x', filters: ['no_five', 'nsfw'], seed: 5, num_images: 2 });
    // Image 0 (seed 5) was screened out once and made again with seed 5 + 2.
    expect(custom.outputs.images.map((i: Job) => [i.seed, i.tries, i.blocked, i.filters.no_five.passed])).toEqual([
      [7, 2, false, true],
      [6, 1, false, true],
    ]);
  });

  it('refuses unknown or malformed filters with a 400 naming filters', async () => {
    for (const filters of [['bogus'], 'nsfw', [1], ['nsfw', 'nsfw'], ['Not A Name'], Array(17).fill('nsfw')]) {
      const res = await submit(stack, { prompt: 'x', filters });
      expect(res.status, JSON.stringify(filters)).toBe(400);
      const body = (await res.json()) as Job;
      expect(body.error, JSON.stringify(filters)).toMatchObject({ code: 'invalid_request', field: 'filters' });
    }
    const bogus = (await (await submit(stack, { prompt: 'x', filters: ['bogus'] })).json()) as Job;
    expect(bogus.error.message).toMatch(/"bogus".*nsfw, grayscale, no_five/);
    const sync = await fetch(`${stack.api.url}/v1/generate?prompt=x&filters=bogus`);
    expect(sync.status).toBe(400);
    expect(((await sync.json()) as Job).error.field).toBe('filters');
    const flag = await submit(stack, { prompt: 'x', prompt_variations: 'yes' });
    expect(((await flag.json()) as Job).error.field).toBe('prompt_variations');
  });

  it('prompt_variations: a distinct, deterministic variant per image, all containing the prompt, in one batch', async () => {
    const prompt = 'photo of sks dog on the beach';
    const sessionClass = ort.InferenceSession as unknown as { prototype: ort.InferenceSession };
    const runs = vi.spyOn(sessionClass.prototype, 'run');
    let job: Job;
    try {
      job = await run(stack, { prompt, num_images: 3, seed: 42, prompt_variations: true, guidance_scale: 7.5 });
      const batches = (input: string) =>
        runs.mock.calls.map((call) => (call[0] as Record<string, ort.Tensor>)[input]?.dims[0]).filter((d) => d !== undefined);
      expect(batches('input_ids')).toEqual([4]); // one text-encoder run: three variants and the negative prompt
      expect(new Set(batches('sample'))).toEqual(new Set([6])); // every UNet step one batch of 3 × (uncond, cond)
      expect(batches('clip_input')).toEqual([1, 1, 1]); // the checker, once per image
    } finally {
      runs.mockRestore();
    }
    expect(job.input).toMatchObject({ prompt, prompt_variations: true });
    const prompts: string[] = job.outputs.images.map((i: Job) => i.prompt);
    expect(new Set(prompts).size).toBe(3);
    for (const variant of prompts) {
      expect(variant.startsWith(`${prompt}, `)).toBe(true);
      expect(variant.split(', ').length).toBe(5); // the prompt, then style, lighting, lens, composition
    }
    const again = await run(stack, { prompt, num_images: 3, seed: 42, prompt_variations: true, guidance_scale: 7.5 });
    expect(again.outputs.images.map((i: Job) => i.prompt)).toEqual(prompts);
    const [a, b] = [await pixels(`${stack.api.url}${job.outputs.images[1].url}`), await pixels(`${stack.api.url}${again.outputs.images[1].url}`)];
    expect(a.equals(b)).toBe(true);
    const otherSeed = await run(stack, { prompt, num_images: 3, seed: 43, prompt_variations: true });
    expect(otherSeed.outputs.images.map((i: Job) => i.prompt)).not.toEqual(prompts);
  });

  it('takes filters and prompt_variations as query parameters on the synchronous route', async () => {
    const res = await fetch(`${stack.api.url}/v1/generate?prompt=a+boat&seed=9&filters=grayscale,nsfw&prompt_variations=true`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-nsfw-content-detected')).toBe('false');
    expect(res.headers.get('x-image-blocked')).toBe('false');
    const job = (await (await fetch(`${stack.api.url}/v1/jobs/${res.headers.get('x-job-id')}`)).json()) as Job;
    expect(job.input).toMatchObject({ filters: ['grayscale', 'nsfw'], prompt_variations: true });
    expect(job.outputs.images[0].prompt).toMatch(/^a boat, /);
  });
});

describe('a model whose checker flags everything', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await stackOn(await model({ safetyChecker: 'flag-all' }), { FILTER_MAX_TRIES: '2' });
  });

  it('never returns a non-black image: each is tried FILTER_MAX_TRIES times, then stored black and marked blocked', async () => {
    const job = await run(stack, { prompt: 'anything', num_images: 2, seed: 10 });
    expect(job.outputs.images.map((i: Job) => [i.seed, i.tries, i.blocked, i.nsfw_content_detected])).toEqual([
      [12, 2, true, true],
      [13, 2, true, true],
    ]);
    expect(job.progress).toEqual({ step: job.progress.total, total: job.progress.total });
    for (const image of job.outputs.images) {
      expect(image.filters.nsfw.passed).toBe(false);
      const data = await pixels(`${stack.api.url}${image.url}`);
      expect(data.length).toBe(64 * 64 * 3);
      expect(data.every((v) => v === 0)).toBe(true);
    }
  });

  it('the synchronous route says so in headers, and its PNG is black too', async () => {
    const res = await fetch(`${stack.api.url}/v1/generate?prompt=anything&seed=1`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-nsfw-content-detected')).toBe('true');
    expect(res.headers.get('x-image-blocked')).toBe('true');
    const { data } = await sharp(Buffer.from(await res.arrayBuffer())).raw().toBuffer({ resolveWithObject: true });
    expect(data.every((v) => v === 0)).toBe(true);
  });
});

describe('a model without a safety checker', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await stackOn(await model({ safetyChecker: 'none' }));
  });

  it('runs no filter by default, and refuses nsfw by name', async () => {
    const job = await run(stack, { prompt: 'x' });
    expect(job.outputs.images[0]).toMatchObject({ filters: {}, nsfw_content_detected: null, blocked: false });
    const res = await submit(stack, { prompt: 'x', filters: ['nsfw'] });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Job).error).toMatchObject({ field: 'filters', message: expect.stringMatching(/no safety checker/) });
  });

  it('fails a queued job naming a filter this worker lacks at once, as bad input (the API had no record to check against)', async () => {
    const payload = { prompt: 'x', negativePrompt: '', width: 64, height: 64, numInferenceSteps: 2, guidanceScale: 7.5, seed: 1, numImages: 1, model: stack.config.model.name, randomSeed: false, filters: ['nsfw'] };
    const queued = await stack.queue.add(GENERATE_JOB, payload, { attempts: 3 });
    const job = await pollJob(stack.api.url, queued.id!);
    expect(job.status).toBe('failed');
    expect(job.error).toMatchObject({ code: 'invalid_request', message: expect.stringMatching(/filters: this worker has no filter "nsfw"/) });
    expect(job.attempts.made).toBe(1);
  });
});
