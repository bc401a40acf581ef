/**
 * Pieces shared by the σ-parameterised (k-diffusion style, Karras et al. 2022) schedulers:
 * x_σ = x₀ + σ·ε, with the model fed c_in·x_σ = x_σ / √(σ² + 1).
 */
import { divide } from '../kernels/index.js';
import type { Scheduler, SchedulerConfig } from '../types.js';
import { kDiffusionAlphasCumprod, type NoiseScheduleDefaults } from './noise-schedule.js';
import { interp } from './numpy-like.js';
import { numTrainTimesteps, predictionType, SchedulerConfigError, type PredictionType } from './scheduler-config.js';
import { outputFor } from './sample-buffers.js';
import {
  indexForTimestep,
  karrasSigmas,
  logSigmas,
  sigmaToT,
  spacingOptions,
  trainingSigmas,
  type SpacingOptions,
} from './timestep-schedule.js';

/** σ at each (possibly fractional) timestep by linear interpolation over the training sigmas. */
export function interpolatedSigmas(timesteps: readonly number[], trainingSigmas: Float32Array): number[] {
  const grid = Array.from({ length: trainingSigmas.length }, (_, i) => i);
  return timesteps.map((t) => interp(t, grid, trainingSigmas));
}

/**
 * Karras et al. 2022, eq. 5, from σ_max down to σ_min, and the fractional training timestep of
 * each σ (interpolated in log σ over the training sigmas).
 */
export function karrasSchedule(
  sigmaMin: number,
  sigmaMax: number,
  numInferenceSteps: number,
  trainingSigmas: Float32Array,
): { sigmas: number[]; timesteps: number[] } {
  const sigmas = karrasSigmas(sigmaMin, sigmaMax, numInferenceSteps);
  const logs = logSigmas(trainingSigmas);
  return { sigmas, timesteps: sigmas.map((s) => sigmaToT(s, logs)) };
}

/**
 * The σ the last step goes to (`final_sigmas_type`): 0, or σ_min = σ at t = 0 (float32 like
 * diffusers' `((1 - alphas_cumprod[0]) / alphas_cumprod[0]) ** 0.5`).
 */
export function finalSigma(alphasCumprod: Float32Array, type: 'zero' | 'sigma_min'): number {
  if (type === 'zero') return 0;
  const f = Math.fround;
  const a0 = alphasCumprod[0] as number;
  return Math.sqrt(f(f(1 - a0) / a0));
}

/**
 * Standard deviation of the initial noise: σ_max, or √(σ_max² + 1) for "leading" spacing, whose
 * first timestep is not the last training one (diffusers' `init_noise_sigma`, in float32).
 */
export function initNoiseSigmaFor(sigmas: Float32Array, spacing: string): number {
  let maxSigma = 0;
  for (const s of sigmas) if (s > maxSigma) maxSigma = s;
  if (spacing === 'linspace' || spacing === 'trailing') return maxSigma;
  const f = Math.fround;
  return f(Math.sqrt(f(f(maxSigma * maxSigma) + 1)));
}

/** x / √(σ² + 1), the Euler input scaling, with diffusers' float32 arithmetic; into `out` when given. */
export function scaleBySigma(sample: Float32Array, sigma: number, out?: Float32Array): Float32Array {
  const f = Math.fround;
  const denom = f(Math.sqrt(f(f(sigma * sigma) + 1)));
  return divide(sample, denom, outputFor(sample, out));
}

/**
 * The denoiser D(x; σ) = c_skip(σ)·x + c_out(σ)·F(x) for each kind of model output F
 * (Karras et al. 2022, Table 1; diffusers' "predicted original sample"): ε gives x − σ·ε,
 * v gives x/(σ² + 1) − v·σ/√(σ² + 1), and x₀ is itself.
 */
export function denoiserScalings(type: PredictionType, sigma: number): { cSkip: number; cOut: number } {
  if (type === 'epsilon') return { cSkip: 1, cOut: -sigma };
  if (type === 'v_prediction') return { cSkip: 1 / (sigma * sigma + 1), cOut: -sigma / Math.sqrt(sigma * sigma + 1) };
  return { cSkip: 0, cOut: 1 };
}

/**
 * diffusers' `_step_index`: found from the first timestep the loop passes (to either
 * `scale_model_input` or `step`), then counted up by each `step`; `reset` on `set_timesteps`.
 */
export class StepIndex {
  private index: number | undefined;

  constructor(private readonly missing: 'throw' | 'last') {}

  reset(): void {
    this.index = undefined;
  }

  current(timesteps: readonly number[], t: number): number {
    this.index ??= indexForTimestep(timesteps, t, this.missing);
    return this.index;
  }

  advance(): void {
    if (this.index !== undefined) this.index += 1;
  }
}

/**
 * What the Euler schedulers share: the config keys they read alike, the run's timesteps with σ
 * per step plus the σ the last step goes to (float32), diffusers' step index, and the c_in
 * input scaling. Before `setTimesteps`, every training σ, noisiest first, then 0 (diffusers'
 * `__init__`). Each subclass picks its sigmas in `setTimesteps` and makes its update in `step`.
 */
export abstract class SigmaScheduler implements Scheduler {
  timesteps: number[] = [];
  initNoiseSigma: number;
  /** c_in = 1/√(σ² + 1) scales the model input. */
  readonly scalesModelInput = true;
  abstract readonly takesNoise: boolean;
  protected readonly numTrainTimesteps: number;
  protected readonly alphasCumprod: Float32Array;
  protected readonly predictionType: PredictionType;
  protected readonly spacing: SpacingOptions;
  private sigmas: Float32Array;
  private readonly stepIndex = new StepIndex('throw');

  constructor(
    private readonly className: string,
    config: SchedulerConfig,
    defaults: NoiseScheduleDefaults & { timestep_spacing: string; steps_offset: number },
  ) {
    this.numTrainTimesteps = numTrainTimesteps(config);
    this.alphasCumprod = kDiffusionAlphasCumprod(config, defaults);
    this.predictionType = predictionType(config);
    this.spacing = spacingOptions(config, defaults);
    const training = trainingSigmas(this.alphasCumprod);
    this.sigmas = new Float32Array(training.length + 1);
    this.sigmas.set(training.slice().reverse());
    this.initNoiseSigma = initNoiseSigmaFor(this.sigmas, this.spacing.spacing);
  }

  abstract setTimesteps(numInferenceSteps: number): void;

  abstract step(
    modelOutput: Float32Array,
    t: number,
    sample: Float32Array,
    noise?: Float32Array,
    out?: Float32Array,
  ): { prevSample: Float32Array };

  /** c_in(σ)·x = x/√(σ² + 1) (Karras et al. 2022, Table 1), so the model sees unit variance. */
  scaleModelInput(sample: Float32Array, t: number, out?: Float32Array): Float32Array {
    const index = this.stepIndex.current(this.timesteps, t);
    return scaleBySigma(sample, this.sigmas[index] as number, out);
  }

  /** Starts a run: σ of each timestep, then the σ the last step goes to. */
  protected startRun(timesteps: number[], sigmas: readonly number[], sigmaLast: number): void {
    this.timesteps = timesteps;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.initNoiseSigma = initNoiseSigmaFor(this.sigmas, this.spacing.spacing);
    this.stepIndex.reset();
  }

  /** σ of the step at timestep `t` and the σ it goes to; `advance` once the step is done. */
  protected currentSigmas(t: number): { sigma: number; sigmaNext: number } {
    if (this.timesteps.length === 0) throw new Error(`${this.className}: call setTimesteps before step`);
    const index = this.stepIndex.current(this.timesteps, t);
    const sigmaNext = this.sigmas[index + 1];
    if (sigmaNext === undefined) throw new SchedulerConfigError('timestep', `${this.className}: no steps left`);
    return { sigma: this.sigmas[index] as number, sigmaNext };
  }

  protected advance(): void {
    this.stepIndex.advance();
  }
}
