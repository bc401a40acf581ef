/**
 * Generate → screen → regenerate on the tiny model: which images are made again, with which
 * seeds, in how many pipeline runs; what a job gets when the tries run out (black images marked
 * blocked); and that with no filter screening anything out the pixels are the pipeline's own.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeTinyModel, type TinyModelOptions } from '../scripts/tiny-model/index.js';
import { createFilterSet } from '../worker/filters/registry.js';
import type { ImageFilter } from '../worker/filters/types.js';
import { loadPipeline, type GenerateRequest, type Pipeline } from '../worker/pipeline/index.js';
import { generateScreened, retrySeed } from '../worker/screening.js';

const request: GenerateRequest = {
  prompt: 'a lighthouse on a cliff',
  width: 64,
  height: 64,
  numInferenceSteps: 2,
  guidanceScale: 7.5,
  seed: 100,
  numImages: 3,
};

const dirs: string[] = [];
const pipelines: Pipeline[] = [];

async function load(options: TinyModelOptions = {}): Promise<Pipeline> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sd-screening-test-'));
  dirs.push(dir);
  await writeTinyModel(dir, options);
  const pipeline = await loadPipeline(dir, { cpuThreads: 1 });
  pipelines.push(pipeline);
  return pipeline;
}

afterAll(async () => {
  await Promise.allSettled(pipelines.map((p) => p.release()));
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** A filter that screens out the images made with the given seeds, and records what it saw. */
function rejectSeeds(seeds: number[]) {
  const seen: Array<{ seed: number; index: number; attempt: number; prompt: string }> = [];
  const filter: ImageFilter = {
    name: 'reject_seeds',
    check(image, context) {
      expect(image.seed).toBe(context.seed);
      seen.push({ seed: context.seed, index: context.index, attempt: context.attempt, prompt: context.prompt });
      return seeds.includes(context.seed) ? { passed: false, detail: 'unlucky seed' } : { passed: true, score: context.seed };
    },
  };
  return { filter, seen };
}

const isBlack = (data: Uint8Array) => data.every((v) => v === 0);

describe('generateScreened', () => {
  let pipeline: Pipeline;
  beforeAll(async () => {
    pipeline = await load();
  });

  it('without filters: one pipeline run, the pipeline’s own pixels, one try each', async () => {
    const generate = vi.spyOn(pipeline, 'generate');
    try {
      const { images, timings } = await generateScreened(pipeline, request, [], 3);
      expect(generate).toHaveBeenCalledTimes(1);
      const direct = await pipeline.generate(request);
      images.forEach((image, i) => {
        expect(Buffer.from(image.data).equals(Buffer.from(direct.images[i]!.data))).toBe(true);
        expect(image).toMatchObject({ seed: 100 + i, tries: 1, blocked: false, verdicts: {}, prompt: request.prompt });
      });
      expect(timings.rounds).toBe(1);
    } finally {
      generate.mockRestore();
    }
  });

  it('regenerates only the screened-out images, together, with seed + i + k·N', async () => {
    // Image 1's first seed (101) fails, and so does its second (101 + 3).
    const { filter, seen } = rejectSeeds([101, 104]);
    const generate = vi.spyOn(pipeline, 'generate');
    try {
      const { images, timings } = await generateScreened(pipeline, request, [filter], 3);
      expect(generate.mock.calls.map(([req]) => [req.numImages, req.seeds])).toEqual([
        [3, [100, 101, 102]],
        [1, [104]],
        [1, [107]],
      ]);
      expect(images.map((i) => [i.seed, i.tries, i.blocked])).toEqual([
        [100, 1, false],
        [107, 3, false],
        [102, 1, false],
      ]);
      expect(images[1]!.verdicts).toEqual({ reject_seeds: { passed: true, score: 107 } });
      expect(seen.filter((s) => s.index === 1).map((s) => s.attempt)).toEqual([1, 2, 3]);
      expect(timings.rounds).toBe(3);
    } finally {
      generate.mockRestore();
    }
    // The reported seed reproduces the image.
    const again = await pipeline.generate({ ...request, numImages: 1, seed: 107 });
    const { images } = await generateScreened(pipeline, request, [rejectSeeds([101, 104]).filter], 3);
    let max = 0;
    for (let k = 0; k < again.images[0]!.data.length; k++) max = Math.max(max, Math.abs(again.images[0]!.data[k]! - images[1]!.data[k]!));
    expect(max).toBeLessThanOrEqual(1);
  });

  it('when the tries run out: a black image marked blocked, with the verdict that blocked it', async () => {
    const { filter } = rejectSeeds([100, 103]); // image 0 fails both of its tries
    const { images } = await generateScreened(pipeline, request, [filter, createFilterSet(pipeline).resolve(['grayscale'])[0]!], 2);
    expect(images[0]).toMatchObject({ seed: 103, tries: 2, blocked: true });
    expect(images[0]!.verdicts.reject_seeds).toEqual({ passed: false, detail: 'unlucky seed' });
    expect(images[0]!.verdicts.grayscale).toMatchObject({ passed: true }); // every filter's verdict is kept
    expect(isBlack(images[0]!.data)).toBe(true);
    expect(images[0]!.data).toHaveLength(64 * 64 * 3);
    expect(images.slice(1).every((image) => !image.blocked && !isBlack(image.data))).toBe(true);
  });

  it('with one try (FILTER_MAX_TRIES=1) nothing is regenerated', async () => {
    const { filter } = rejectSeeds([102]);
    const generate = vi.spyOn(pipeline, 'generate');
    try {
      const { images } = await generateScreened(pipeline, request, [filter], 1);
      expect(generate).toHaveBeenCalledTimes(1);
      expect(images.map((i) => i.blocked)).toEqual([false, false, true]);
    } finally {
      generate.mockRestore();
    }
  });

  it('reports progress across rounds: the total grows by each regeneration, and ends at step = total', async () => {
    const steps: Array<[number, number]> = [];
    await generateScreened(pipeline, request, [rejectSeeds([100]).filter], 3, { onStep: (s, t) => steps.push([s, t]) });
    const first = steps[0]![1];
    expect(steps.at(-1)).toEqual([2 * first, 2 * first]);
    for (let i = 1; i < steps.length; i++) expect(steps[i]![0]).toBe(steps[i - 1]![0] + 1);
  });

  it('is deterministic, keeps each image’s prompt through its retries, and stops when canceled', async () => {
    const prompts = ['a, oil painting', 'b, photograph', 'c, 3d render'];
    const run = () => generateScreened(pipeline, { ...request, prompts }, [rejectSeeds([101]).filter], 3);
    const [a, b] = [await run(), await run()];
    expect(a.images.map((i) => i.prompt)).toEqual(prompts);
    a.images.forEach((image, i) => expect(Buffer.from(image.data).equals(Buffer.from(b.images[i]!.data))).toBe(true));

    const controller = new AbortController();
    const stopping: ImageFilter = { name: 'stop', check: () => (controller.abort(), { passed: false }) };
    await expect(generateScreened(pipeline, request, [stopping], 3, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('retry seeds wrap around 2³²', () => {
    expect(retrySeed(2 ** 32 - 1, 1, 4)).toBe(3);
    expect(retrySeed(5, 0, 4)).toBe(5);
  });
});

describe('with a safety checker that flags everything', () => {
  it('never returns a non-black image: every image blocked by the nsfw verdict', async () => {
    const pipeline = await load({ safetyChecker: 'flag-all' });
    const filters = createFilterSet(pipeline).resolve(undefined);
    expect(filters.map((f) => f.name)).toEqual(['nsfw']);
    const { images } = await generateScreened(pipeline, { ...request, numImages: 2 }, filters, 2);
    for (const image of images) {
      expect(image).toMatchObject({ blocked: true, tries: 2, verdicts: { nsfw: { passed: false } } });
      expect(isBlack(image.data)).toBe(true);
    }
    expect(images.map((i) => i.seed)).toEqual([102, 103]);
  });
});
