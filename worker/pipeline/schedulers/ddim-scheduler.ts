/**
 * Denoising diffusion implicit models (Song et al. 2020, https://arxiv.org/abs/2010.02502), a port
 * of diffusers' `DDIMScheduler` with η = 0: the deterministic update of formula (12).
 */
import type { Scheduler, SchedulerConfig } from '../types.js';
import { makeAlphasCumprod, noiseScheduleOptions } from './noise-schedule.js';
import {
  checkSameLength,
  option,
  predictionType,
  rejectEnabled,
  type PredictionType,
} from './scheduler-config.js';
import {
  checkNumInferenceSteps,
  checkSpacing,
  spacedTimesteps,
  type TimestepSpacing,
} from './timestep-schedule.js';

/**
 * diffusers' defaults, except `clip_sample`: diffusers defaults it to true, but every Stable
 * Diffusion config sets it false, and clipping latents to [−1, 1] is wrong for latent models.
 */
export const DDIM_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  clip_sample: false,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: 'epsilon',
  thresholding: false,
  clip_sample_range: 1.0,
  timestep_spacing: 'leading',
  rescale_betas_zero_snr: false,
} as const;

export class DdimScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];

  private readonly alphasCumprod: Float32Array;
  /** ᾱ for the step past t = 0: 1 with `set_alpha_to_one`, else ᾱ_0. */
  private readonly finalAlphaCumprod: number;
  private readonly numTrainTimesteps: number;
  private readonly predictionType: PredictionType;
  private readonly clipSample: boolean;
  private readonly clipSampleRange: number;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  private numInferenceSteps = 0;

  constructor(config: SchedulerConfig) {
    rejectEnabled(config, ['thresholding'], 'DDIMScheduler');
    const schedule = noiseScheduleOptions(
      config,
      { betaStart: DDIM_DEFAULTS.beta_start, betaEnd: DDIM_DEFAULTS.beta_end, betaSchedule: DDIM_DEFAULTS.beta_schedule },
      true,
    );
    this.numTrainTimesteps = schedule.numTrainTimesteps;
    this.alphasCumprod = makeAlphasCumprod(schedule);
    // at every step we look into the previous ᾱ; for the final step there is none
    this.finalAlphaCumprod = option(config, 'set_alpha_to_one', DDIM_DEFAULTS.set_alpha_to_one)
      ? 1
      : (this.alphasCumprod[0] as number);
    this.predictionType = predictionType(config);
    this.clipSample = option(config, 'clip_sample', DDIM_DEFAULTS.clip_sample);
    this.clipSampleRange = option(config, 'clip_sample_range', DDIM_DEFAULTS.clip_sample_range);
    this.spacing = checkSpacing(option(config, 'timestep_spacing', DDIM_DEFAULTS.timestep_spacing));
    this.stepsOffset = option(config, 'steps_offset', DDIM_DEFAULTS.steps_offset);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.numTrainTimesteps);
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = spacedTimesteps(this.spacing, this.numTrainTimesteps, numInferenceSteps, this.stepsOffset, true);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): { prevSample: Float32Array } {
    if (this.numInferenceSteps === 0) throw new Error('DDIMScheduler: call setTimesteps before step');
    checkSameLength(modelOutput, sample);
    // 1. get previous step value (= t − Δt)
    const prevTimestep = t - Math.floor(this.numTrainTimesteps / this.numInferenceSteps);

    // 2. compute alphas, betas
    const alphaProdT = this.alphasCumprod[t];
    if (!Number.isInteger(t) || alphaProdT === undefined) {
      throw new RangeError(`DDIMScheduler: timestep ${t} is outside 0…${this.numTrainTimesteps - 1}`);
    }
    const alphaProdTPrev =
      prevTimestep >= 0 ? (this.alphasCumprod[prevTimestep] as number) : this.finalAlphaCumprod;
    const betaProdT = 1 - alphaProdT;
    const sqrtAlpha = Math.sqrt(alphaProdT);
    const sqrtBeta = Math.sqrt(betaProdT);

    // 5. variance σ_t(η) of formula (16) is 0 for η = 0, so
    // 6. the "direction pointing to x_t" of formula (12) has weight √(1 − α_{t−1})
    const directionCoeff = Math.sqrt(1 - alphaProdTPrev);
    const sqrtAlphaPrev = Math.sqrt(alphaProdTPrev);

    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i] as number;
      const m = modelOutput[i] as number;
      // 3. predicted x₀ ("predicted x_0" of formula (12)) and ε
      let predOriginal: number;
      let predEpsilon: number;
      if (this.predictionType === 'epsilon') {
        predOriginal = (x - sqrtBeta * m) / sqrtAlpha;
        predEpsilon = m;
      } else if (this.predictionType === 'sample') {
        predOriginal = m;
        predEpsilon = (x - sqrtAlpha * predOriginal) / sqrtBeta;
      } else {
        predOriginal = sqrtAlpha * x - sqrtBeta * m;
        predEpsilon = sqrtAlpha * m + sqrtBeta * x;
      }
      // 4. clip "predicted x₀" (ε stays the model's, as with use_clipped_model_output=False)
      if (this.clipSample) {
        predOriginal = Math.min(Math.max(predOriginal, -this.clipSampleRange), this.clipSampleRange);
      }
      // 7. x_{t−1} without "random noise" of formula (12)
      prevSample[i] = sqrtAlphaPrev * predOriginal + directionCoeff * predEpsilon;
    }
    return { prevSample };
  }
}
