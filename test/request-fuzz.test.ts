import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { HttpError } from '../api/http-errors.js';
import { parseGenerationRequest, type ParsingDeps } from '../api/request-parsing.js';
import { loadConfig, type Config } from '../shared/config.js';
import { JobPayloadSchema, MAX_SEED, SCHEDULER_NAMES } from '../shared/job-schema.js';
import { readModelCapabilities } from '../shared/model-capabilities.js';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { loadPipeline } from '../worker/pipeline/index.js';
import type { Pipeline } from '../worker/pipeline/types.js';
import { toGenerateRequest } from '../worker/processor.js';
import { createFilterSet, type FilterSet } from '../worker/filters/registry.js';

/**
 * Property: whatever the API accepts, the worker runs; whatever the worker would refuse, the API
 * refuses first. "The worker" is the real one on the tiny model: the processor's payload schema
 * (JobPayloadSchema, as the job comes out of Redis as JSON) and the pipeline's own request checks
 * (`checkRequest`: checkInputs and the scheduler's limits), never a copy of them. Requests,
 * configured limits and model exports (dynamic size, fixed size with a static batch, LCM) all
 * vary; requests arrive as JSON bodies and as query strings.
 */
let dir: string;
const models: { name: string; dir: string; pipeline: Pipeline; filters: FilterSet }[] = [];

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-fuzz-'));
  await writeTinyModel(path.join(dir, 'fixed'), { fixedSize: 64, fixedBatch: 1 });
  await writeTinyModel(path.join(dir, 'lcm'), { lcm: true, safetyChecker: 'none' });
  for (const [name, modelDir] of [
    ['dynamic', inject('tinyModelDir')],
    ['fixed', path.join(dir, 'fixed')],
    ['lcm', path.join(dir, 'lcm')],
  ] as const) {
    const pipeline = await loadPipeline(modelDir, { cpuThreads: 1 });
    // The worker's own filter set for this export (nsfw only with a safety checker).
    models.push({ name, dir: modelDir, pipeline, filters: createFilterSet(pipeline) });
  }
});
afterAll(async () => {
  await Promise.all(models.map((m) => m.pipeline.release()));
  await fs.rm(dir, { recursive: true, force: true });
});

const SIZES = [0, 8, 56, 63, 64, 72, 128, 504, 512, 520, 768, 1024, 2040, 2048, 2056, 4096, 8192];
const size = fc.oneof(fc.constantFrom(...SIZES), fc.integer({ min: -16, max: 9000 }), fc.double({ min: -1, max: 3000 }), fc.constant('512'));
const steps = fc.oneof(fc.constantFrom(0, 1, 2, 49, 50, 51, 150, 999, 1000, 1001), fc.integer({ min: -5, max: 1200 }), fc.double({ min: 0, max: 60 }));
const seed = fc.oneof(
  fc.constantFrom(0, 1, MAX_SEED, MAX_SEED - 1, MAX_SEED - 3, MAX_SEED - 15, MAX_SEED + 1, 2 ** 53, -1),
  fc.integer({ min: 0, max: MAX_SEED }),
  fc.double({ min: 0, max: 10 }),
);

/** Any value of every field, garbage included: the API must refuse these cleanly, never crash. */
const anyRequest = fc.record(
  {
    prompt: fc.oneof(fc.string({ minLength: 1, maxLength: 40 }), fc.constantFrom('', '   ', 'photo of sks dog'), fc.string({ minLength: 1990, maxLength: 2010 }), fc.integer()),
    negative_prompt: fc.oneof(fc.string({ maxLength: 20 }), fc.constant(null)),
    width: size,
    height: size,
    img_size: size,
    num_inference_steps: steps,
    guidance_scale: fc.oneof(fc.double({ min: -2, max: 60, noNaN: true }), fc.constantFrom(0, 1, 7.5, 50, Number.MAX_VALUE)),
    seed,
    num_images: fc.oneof(fc.integer({ min: -1, max: 20 }), fc.constantFrom(1, 2, 4, 16, 17)),
    scheduler: fc.constantFrom(...SCHEDULER_NAMES, 'heun', 'Euler', ''),
    timeout_s: fc.oneof(fc.integer({ min: 0, max: 100_000 }), fc.constant(1.5)),
    model: fc.constantFrom('served', 'another'),
  },
  { requiredKeys: [] },
);

/** Requests a client means: each field left out or set near the edges of what may work. */
const plausibleRequest = fc
  .record(
    {
      negative_prompt: fc.constantFrom('', 'blurry'),
      size: fc.oneof(
        fc.record({ img_size: fc.constantFrom(...SIZES) }),
        fc.record({ width: fc.constantFrom(...SIZES), height: fc.constantFrom(...SIZES) }, { requiredKeys: [] }),
      ),
      num_inference_steps: fc.constantFrom(1, 2, 20, 49, 50, 51, 150, 151, 999, 1000, 1001),
      guidance_scale: fc.constantFrom(0, 1, 7.5, 50),
      seed,
      num_images: fc.integer({ min: 1, max: 17 }),
      scheduler: fc.constantFrom(...SCHEDULER_NAMES),
      timeout_s: fc.constantFrom(1, 600),
      model: fc.constant('served'),
      filters: fc.oneof({ arbitrary: fc.subarray(['nsfw', 'grayscale']), weight: 4 }, { arbitrary: fc.constant(['sepia']), weight: 1 }),
      prompt_variations: fc.boolean(),
      output: fc.oneof(
        fc.record({ output_format: fc.constant('png') }),
        fc.record({ output_format: fc.constantFrom('webp', 'jpeg'), output_quality: fc.constantFrom(1, 80, 100) }, { requiredKeys: ['output_format'] }),
        fc.constant({ output_format: 'png', output_quality: 80 }),
      ),
    },
    { requiredKeys: [] },
  )
  .map(({ size: sides, output, ...rest }) => ({ prompt: 'a fuzzed fox', ...rest, ...sides, ...output }));

const clientRequest = fc.oneof({ arbitrary: plausibleRequest, weight: 3 }, { arbitrary: anyRequest, weight: 1 });

/** The configured limits a deployment may choose (each within its own config range). */
const configArb = fc
  .record({
    maxSteps: fc.oneof(fc.constantFrom(1, 50, 150, 1000), fc.integer({ min: 1, max: 1000 })),
    maxNumImages: fc.integer({ min: 1, max: 16 }),
    minSize: fc.constantFrom(8, 64, 128, 512),
    maxSize: fc.constantFrom(64, 512, 1024, 2048, 4096, 8192),
    defaultSteps: fc.integer({ min: 1, max: 500 }),
  })
  .filter((c) => c.minSize <= c.maxSize)
  .map((c) =>
    loadConfig({
      MODEL_NAME: 'served',
      MAX_STEPS: String(c.maxSteps),
      DEFAULT_STEPS: String(Math.min(c.defaultSteps, c.maxSteps)),
      MAX_NUM_IMAGES: String(c.maxNumImages),
      MIN_IMAGE_SIZE: String(c.minSize),
      MAX_IMAGE_SIZE: String(c.maxSize),
    }),
  );

const capabilities = new Map<string, Awaited<ReturnType<typeof readModelCapabilities>>>();
async function depsFor(config: Readonly<Config>, modelDir: string): Promise<ParsingDeps> {
  let caps = capabilities.get(modelDir);
  if (!caps) capabilities.set(modelDir, (caps = await readModelCapabilities(modelDir)));
  return { config, models: new Map([[config.model.name, { ...caps, name: config.model.name }]]) };
}

/** The API's verdict: the payload it would queue, or null; anything but a 4xx refusal fails the test. */
async function apiVerdict(deps: ParsingDeps, input: unknown, where: 'body' | 'query') {
  try {
    return await parseGenerationRequest(deps, input, where);
  } catch (err) {
    if (err instanceof HttpError && err.status >= 400 && err.status < 500) return null;
    throw err;
  }
}

/** The worker's verdict on a queued payload: null when it would run it, else why not. */
function workerRefusal(model: (typeof models)[number], queued: unknown): string | null {
  const parsed = JobPayloadSchema.safeParse(queued);
  if (!parsed.success) return `payload: ${parsed.error.message}`;
  try {
    model.filters.resolve(parsed.data.filters);
    model.pipeline.checkRequest?.(toGenerateRequest(parsed.data));
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The query string a client would send for the same request (flat values as text). */
function asQuery(request: Record<string, unknown>): Record<string, unknown> {
  const query: Record<string, unknown> = Object.create(null);
  for (const [key, value] of Object.entries(request)) {
    if (Array.isArray(value)) query[key] = value.join(',');
    else if (value !== null && typeof value !== 'object') query[key] = String(value);
  }
  return query;
}

const modelArb = fc.constantFrom(0, 1, 2);

describe('the API never queues what the worker would refuse', () => {
  it('whatever the API accepts (JSON body or query string), the worker runs', async () => {
    let accepted = 0;
    // About 3 % of these requests are accepted: rounds of fresh random requests until enough were,
    // so the property is checked on at least 25 accepted ones whatever the seed.
    for (let round = 0; round < 6 && accepted < 25; round += 1)
      await fc.assert(
      fc.asyncProperty(configArb, modelArb, clientRequest, async (config, m, request) => {
        const model = models[m]!;
        const deps = await depsFor(config, model.dir);
        for (const [input, where] of [
          [request, 'body'],
          [asQuery(request), 'query'],
        ] as const) {
          const payload = await apiVerdict(deps, input, where);
          if (payload === null) continue;
          accepted += 1;
          // What Redis hands the worker: the payload as JSON.
          const refusal = workerRefusal(model, JSON.parse(JSON.stringify(payload)));
          expect(refusal, `${model.name} ${where} ${JSON.stringify(request)}`).toBeNull();
        }
      }),
      { numRuns: 600 },
      );
    // The generators must reach acceptance often enough for the property to mean something.
    expect(accepted).toBeGreaterThanOrEqual(25);
  });

  it('whatever the worker would refuse, the API refuses first', async () => {
    // Requests built from the worker's side: every field a value the pipeline takes or just misses.
    const workerRequest = fc.record({
      width: fc.constantFrom(...SIZES, 64, 512),
      height: fc.constantFrom(...SIZES, 64, 512),
      num_inference_steps: steps.filter((s) => typeof s === 'number' && Number.isInteger(s)),
      guidance_scale: fc.constantFrom(0, 1, 7.5, 50),
      seed: fc.constantFrom(0, 7, MAX_SEED, MAX_SEED - 1, MAX_SEED - 3, MAX_SEED - 16),
      num_images: fc.integer({ min: 1, max: 17 }),
      scheduler: fc.constantFrom(...SCHEDULER_NAMES),
    });
    let refusedByWorker = 0;
    await fc.assert(
      fc.asyncProperty(configArb, modelArb, workerRequest, async (config, m, fields) => {
        const model = models[m]!;
        const request = { prompt: 'a fuzzed fox', ...fields };
        const refusal = workerRefusal(model, {
          prompt: request.prompt,
          negativePrompt: '',
          width: request.width,
          height: request.height,
          numInferenceSteps: request.num_inference_steps,
          guidanceScale: request.guidance_scale,
          seed: request.seed,
          numImages: request.num_images,
          scheduler: request.scheduler,
          model: 'served',
          randomSeed: false,
        });
        if (refusal === null) return;
        refusedByWorker += 1;
        const deps = await depsFor(config, model.dir);
        expect(await apiVerdict(deps, request, 'body'), `${model.name}: worker says ${refusal}`).toBeNull();
        expect(await apiVerdict(deps, asQuery(request), 'query'), `${model.name} (query): worker says ${refusal}`).toBeNull();
      }),
      { numRuns: 600 },
    );
    expect(refusedByWorker).toBeGreaterThan(20);
  });
});
