import type { ModelCapabilities as ExportCapabilities } from '../../shared/model-capabilities.js';

/**
 * Contracts between the parts of the diffusion pipeline. Each part (tokenizer, schedulers,
 * random numbers, ONNX sessions) lives in its own file and is tested alone; `index.ts`
 * re-exports the public surface that DESIGN.md names.
 */

/**
 * A denoising scheduler with diffusers' semantics (samples are flat Float32Arrays). Results are
 * new arrays unless the caller passes `out`; a scheduler copies what it keeps between steps, so
 * callers may reuse their buffers from step to step.
 */
export interface Scheduler {
  /** Prepares `timesteps` for a run of `numInferenceSteps` steps. */
  setTimesteps(numInferenceSteps: number): void;
  /** Timesteps of the current run, in the order the loop visits them. */
  readonly timesteps: number[];
  /** Standard deviation of the initial noise: initial latents are `randn × initNoiseSigma`. */
  readonly initNoiseSigma: number;
  /** Whether `step` draws standard normals (ancestral, LCM and SDE steps): pass seeded `noise`. */
  readonly takesNoise: boolean;
  /** False when `scaleModelInput` returns the sample unchanged. */
  readonly scalesModelInput: boolean;
  /**
   * Scales the denoising model's input for timestep `t` (identity for most schedulers). Writes
   * into `out` when given; otherwise returns a new array, or `sample` itself for the identity.
   */
  scaleModelInput(sample: Float32Array, t: number, out?: Float32Array): Float32Array;
  /**
   * One reverse-diffusion step. `noise`, when given, replaces the standard-normal draw of a
   * stochastic step (Euler ancestral, LCM); deterministic schedulers ignore it. `out`, when
   * given, receives `prevSample` and may be `sample` itself (an in-place step). `denoised`
   * (LCM's x₀ estimate) is a buffer of the scheduler's that its next step rewrites.
   */
  step(
    modelOutput: Float32Array,
    t: number,
    sample: Float32Array,
    noise?: Float32Array,
    out?: Float32Array,
  ): { prevSample: Float32Array; denoised?: Float32Array };
}

/** scheduler_config.json as diffusers writes it (snake_case keys). */
export type SchedulerConfig = Record<string, unknown>;

/** RGB image, 8 bits per channel, rows top to bottom, pixels interleaved (HWC). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
  /** The seed whose latents produced this image (request seed + image index). */
  seed: number;
}

export interface GenerateRequest {
  prompt: string;
  negativePrompt?: string;
  width: number;
  height: number;
  numInferenceSteps: number;
  guidanceScale: number;
  seed: number;
  numImages: number;
  /** diffusers class name or an alias (`euler_a`, `dpmpp_2m_karras`, …); default: the model's. */
  scheduler?: string;
  /**
   * One prompt per image (prompt variations); default `prompt` for every image. All of them go
   * through the text encoder in one run, each image's UNet rows conditioned on its own.
   */
  prompts?: string[];
  /** One seed per image (regenerating screened-out images); default `seed + i`. */
  seeds?: number[];
}

export interface GenerateOptions {
  signal?: AbortSignal;
  /** Called after each denoising step: step counts from 1 to total (over all images). */
  onStep?: (step: number, total: number) => void;
}

/**
 * Milliseconds spent in each stage of one `generate` call. `unet`, `textEncoder` and `vae` are
 * time inside ONNX Runtime; `denoise` is the denoising loops' wall time, so `denoise − unet` is
 * the loops' JavaScript work (scheduler math, guidance, feeding the UNet).
 */
export interface StageTimings {
  tokenize: number;
  textEncoder: number;
  unet: number;
  scheduler: number;
  denoise: number;
  vae: number;
  total: number;
}

/**
 * What a loaded model can do, as the sessions declare it; the API reads the same from the export
 * (`readModelCapabilities`, which adds each scheduler's step limit) and a test keeps them equal.
 */
export type ModelCapabilities = Omit<ExportCapabilities, 'maxStepsByScheduler' | 'filters'>;

/**
 * The export's NSFW safety checker (`safety_checker/`), one image at a time as diffusers runs it;
 * `ms` is the time inside ONNX Runtime.
 */
export interface SafetyChecker {
  check(image: RgbImage): Promise<{ nsfw: boolean; ms: number }>;
}

export interface Pipeline {
  readonly capabilities: ModelCapabilities;
  /** Present when the export has a safety checker; `generate` does not run it (the worker screens). */
  readonly safetyChecker?: SafetyChecker | undefined;
  generate(
    request: GenerateRequest,
    options?: GenerateOptions,
  ): Promise<{ images: RgbImage[]; timings: StageTimings }>;
  /** Throws what `generate` would throw for a request the model cannot serve, without running it. */
  checkRequest?(request: GenerateRequest): void;
  release(): Promise<void>;
}
