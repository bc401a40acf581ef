/**
 * Generate → screen → regenerate. The pipeline makes the job's images; every filter checks every
 * image; an image any filter screens out is made again with a fresh seed (the screened-out
 * images of a round together, in one batch), up to `maxTries` tries per image in all. An image
 * still screened out after its last try is never returned as if it were fine: it is replaced by
 * a black image (as diffusers does with what its safety checker flags) and marked `blocked`, with
 * the verdicts that blocked it. The job itself succeeds.
 *
 * Seeds stay deterministic: image i's try k (from 0) uses (seed_i + k·N) mod 2³², N being the
 * job's image count and seed_i its first seed (request seed + i), so no try reuses the seed of
 * another image of the job, and the reported seed reproduces the image.
 */
import type { FilterVerdict } from '../shared/filters.js';
import { checkedVerdict } from './filters/registry.js';
import type { ImageFilter } from './filters/types.js';
import type { GenerateOptions, GenerateRequest, Pipeline, RgbImage, StageTimings } from './pipeline/types.js';

export interface ScreenedImage extends RgbImage {
  /** The prompt the image was made from. */
  prompt: string;
  /** Every filter's verdict on the image's last try, by filter name. */
  verdicts: Record<string, FilterVerdict>;
  /** Tries it took (1 = the first image passed). */
  tries: number;
  /** Every try was screened out: `data` is black. */
  blocked: boolean;
}

export interface ScreeningTimings extends StageTimings {
  /** Milliseconds in the filters. */
  screen: number;
  /** Pipeline runs: 1, plus one per round of regeneration. */
  rounds: number;
}

const SEED_SPACE = 2 ** 32;

export function retrySeed(firstSeed: number, attempt: number, numImages: number): number {
  return (firstSeed + attempt * numImages) % SEED_SPACE;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    const error = new Error('Generation canceled');
    error.name = 'AbortError';
    throw Object.assign(error, { code: 'canceled' });
  }
}

export async function generateScreened(
  pipeline: Pipeline,
  request: GenerateRequest,
  filters: readonly ImageFilter[],
  maxTries: number,
  options: GenerateOptions = {},
): Promise<{ images: ScreenedImage[]; timings: ScreeningTimings }> {
  const n = request.numImages;
  const tries = Math.max(1, Math.floor(maxTries));
  const prompts = request.prompts ?? Array.from({ length: n }, () => request.prompt);
  const firstSeeds = request.seeds ?? Array.from({ length: n }, (_, i) => request.seed + i);
  const timings: ScreeningTimings = { tokenize: 0, textEncoder: 0, unet: 0, scheduler: 0, denoise: 0, vae: 0, total: 0, screen: 0, rounds: 0 };
  const started = performance.now();
  const results: ScreenedImage[] = new Array(n);
  let pending = Array.from({ length: n }, (_, i) => i);
  let stepsDone = 0;

  for (let attempt = 0; pending.length > 0; attempt++) {
    throwIfAborted(options.signal);
    const seeds = pending.map((i) => retrySeed(firstSeeds[i]!, attempt, n));
    let roundTotal = 0;
    const generated = await pipeline.generate(
      { ...request, numImages: pending.length, prompts: pending.map((i) => prompts[i]!), seeds },
      {
        ...(options.signal ? { signal: options.signal } : {}),
        // Progress counts on across rounds: a regeneration adds its steps to the total.
        onStep: (step, total) => {
          roundTotal = total;
          options.onStep?.(stepsDone + step, stepsDone + total);
        },
      },
    );
    stepsDone += roundTotal;
    timings.rounds += 1;
    for (const key of ['tokenize', 'textEncoder', 'unet', 'scheduler', 'denoise', 'vae'] as const) timings[key] += generated.timings[key];

    const again: number[] = [];
    for (const [k, index] of pending.entries()) {
      const image = generated.images[k]!;
      const screenStart = performance.now();
      const verdicts: Record<string, FilterVerdict> = {};
      for (const filter of filters) {
        throwIfAborted(options.signal);
        const context = { prompt: prompts[index]!, seed: seeds[k]!, index, attempt: attempt + 1, signal: options.signal };
        verdicts[filter.name] = checkedVerdict(filter.name, await filter.check(image, context));
      }
      timings.screen += performance.now() - screenStart;
      const screenedOut = Object.values(verdicts).some((verdict) => !verdict.passed);
      if (screenedOut && attempt + 1 < tries) {
        again.push(index);
        continue;
      }
      results[index] = {
        ...image,
        data: screenedOut ? new Uint8Array(image.data.length) : image.data,
        prompt: prompts[index]!,
        verdicts,
        tries: attempt + 1,
        blocked: screenedOut,
      };
    }
    pending = again;
  }
  timings.total = performance.now() - started;
  return { images: results, timings };
}
