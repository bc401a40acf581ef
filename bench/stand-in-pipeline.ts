/**
 * A stand-in for the diffusion pipeline with a fixed cost per image that leaves the CPU idle while
 * it "runs", as a GPU does: a timer, not a loop. Everything around it (queue, processor, encoding,
 * storage) stays real, so a benchmark measures the system's own overhead against a known GPU time.
 *
 * Worker processes get it through `stand-in-register.mjs`, which swaps it in for
 * `worker/pipeline/index` under the unchanged `worker/main.ts`. It reads:
 *   BENCH_PIPELINE_MS   milliseconds per image (default 100)
 * and answers with a fixed picture (`natural-image.ts`) of the requested size, so encoding costs
 * what it would on a generated image.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { GenerateOptions, GenerateRequest, ModelCapabilities, Pipeline, RgbImage, StageTimings } from '../worker/pipeline/types.js';
import { naturalImage } from './natural-image.js';

export const STAND_IN_MODEL = 'stand-in';

/** Progress is reported at most this often within an image, like a real step loop's. */
const STEP_MS = 5;

/** Read as a cancel by the processor, as the real pipeline's JobCanceledError is. */
class StandInCanceled extends Error {
  override readonly name = 'AbortError';
  readonly code = 'canceled';
}

export interface StandInOptions {
  msPerImage: number;
  name?: string;
}

export class StandInPipeline implements Pipeline {
  readonly capabilities: ModelCapabilities;
  private readonly pictures = new Map<string, Uint8Array>();

  constructor(private readonly options: StandInOptions) {
    this.capabilities = {
      name: options.name ?? STAND_IN_MODEL,
      sizeMultiple: 8,
      minSize: 64,
      maxSize: 1024,
      defaultSize: 512,
      defaultScheduler: 'PNDMScheduler',
      dtype: 'float16',
    };
  }

  async generate(request: GenerateRequest, options: GenerateOptions = {}): Promise<{ images: RgbImage[]; timings: StageTimings }> {
    const started = performance.now();
    const { signal, onStep } = options;
    const cost = this.options.msPerImage;
    // Steps as the real loop counts them, spread over each image's time; deadlines are absolute so
    // timer lateness does not add up over the steps.
    const stepsPerImage = Math.max(1, Math.min(request.numInferenceSteps, Math.floor(cost / STEP_MS)));
    const total = stepsPerImage * request.numImages;
    const images: RgbImage[] = [];
    for (let i = 0; i < request.numImages; i++) {
      const imageStart = performance.now();
      for (let s = 1; s <= stepsPerImage; s++) {
        if (signal?.aborted) throw new StandInCanceled();
        const due = imageStart + (cost * s) / stepsPerImage;
        await sleep(Math.max(0, due - performance.now()), undefined, signal ? { signal } : {});
        onStep?.(i * stepsPerImage + s, total);
      }
      images.push({ width: request.width, height: request.height, data: this.picture(request.width, request.height), seed: request.seed + i });
    }
    const ms = performance.now() - started;
    return { images, timings: { tokenize: 0, textEncoder: 0, unet: ms, scheduler: 0, denoise: ms, vae: 0, total: ms } };
  }

  /** Made once per size: the "GPU" hands over finished pixels, so building them costs nothing per job. */
  picture(width: number, height: number): Uint8Array {
    const key = `${width}x${height}`;
    let data = this.pictures.get(key);
    if (!data) {
      data = naturalImage(width, height);
      this.pictures.set(key, data);
    }
    return data;
  }

  async release(): Promise<void> {
    this.pictures.clear();
  }
}

/** `worker/pipeline/index.ts`'s entry point as `worker/main.ts` calls it; the model folder is not read. */
export async function loadPipeline(_modelDir: string, _options: unknown = {}): Promise<Pipeline> {
  const msPerImage = Number(process.env['BENCH_PIPELINE_MS'] ?? 100);
  if (!Number.isFinite(msPerImage) || msPerImage < 0) throw new Error(`BENCH_PIPELINE_MS must be a number of milliseconds ≥ 0, got ${process.env['BENCH_PIPELINE_MS']}`);
  const pipeline = new StandInPipeline({ msPerImage });
  // The first job should not pay for drawing the usual picture.
  pipeline.picture(512, 512);
  return pipeline;
}
