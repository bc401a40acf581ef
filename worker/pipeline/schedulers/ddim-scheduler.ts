/**
 * Denoising diffusion implicit models (Song et al. 2020, https://arxiv.org/abs/2010.02502), a port
 * of diffusers' `DDIMScheduler` with η = 0: the deterministic update of formula (12).
 */
import { ddimStep } from '../kernels/index.js';
import type { Scheduler, SchedulerConfig } from '../types.js';
import { DiscreteAlphas, predictedNoise, predictedOriginalSample } from './noise-schedule.js';
import { option, predictionType, rejectEnabled, type PredictionType } from './scheduler-config.js';
import { checkSameLength, outputFor, unscaledModelInput } from './sample-buffers.js';
import { checkNumInferenceSteps, spacedTimesteps, spacingOptions, type SpacingOptions } from './timestep-schedule.js';

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
  readonly takesNoise = false; // η = 0
  readonly scalesModelInput = false;
  timesteps: number[] = [];

  private readonly alphas: DiscreteAlphas;
  private readonly predictionType: PredictionType;
  private readonly clipSample: boolean;
  private readonly clipSampleRange: number;
  private readonly spacing: SpacingOptions;
  private numInferenceSteps = 0;

  constructor(config: SchedulerConfig) {
    rejectEnabled(config, ['thresholding'], 'DDIMScheduler');
    this.alphas = new DiscreteAlphas('DDIMScheduler', config, DDIM_DEFAULTS);
    this.predictionType = predictionType(config);
    this.clipSample = option(config, 'clip_sample', DDIM_DEFAULTS.clip_sample);
    this.clipSampleRange = option(config, 'clip_sample_range', DDIM_DEFAULTS.clip_sample_range);
    this.spacing = spacingOptions(config, DDIM_DEFAULTS);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.alphas.numTrainTimesteps);
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = spacedTimesteps(this.spacing, this.alphas.numTrainTimesteps, numInferenceSteps, true);
  }

  scaleModelInput(sample: Float32Array, _t: number, out?: Float32Array): Float32Array {
    return unscaledModelInput(sample, out);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _noise?: Float32Array, out?: Float32Array) {
    if (this.numInferenceSteps === 0) throw new Error('DDIMScheduler: call setTimesteps before step');
    checkSameLength(modelOutput, sample);
    // 1. get previous step value (= t − Δt)
    const prevTimestep = t - Math.floor(this.alphas.numTrainTimesteps / this.numInferenceSteps);

    // 2. compute alphas, betas
    const alphaProdT = this.alphas.at(t);
    const alphaProdTPrev = this.alphas.atPrev(prevTimestep);
    const betaProdT = 1 - alphaProdT;
    const sqrtAlpha = Math.sqrt(alphaProdT);
    const sqrtBeta = Math.sqrt(betaProdT);

    // 5. variance σ_t(η) of formula (16) is 0 for η = 0, so
    // 6. the "direction pointing to x_t" of formula (12) has weight √(1 − α_{t−1})
    const directionCoeff = Math.sqrt(1 - alphaProdTPrev);
    const sqrtAlphaPrev = Math.sqrt(alphaProdTPrev);

    const { predictionType: type, clipSample, clipSampleRange: range } = this;
    const prevSample = outputFor(sample, out);
    if (type !== 'sample') {
      // steps 3–7 below, for ε and v, in one kernel pass
      const clipRange = clipSample ? range : Infinity;
      ddimStep(sample, modelOutput, prevSample, type, { sqrtAlpha, sqrtBeta, clipRange, sqrtAlphaPrev, directionCoeff });
      return { prevSample };
    }
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i] as number;
      const m = modelOutput[i] as number;
      // 3. predicted x₀ ("predicted x_0" of formula (12)) and ε
      let predOriginal = predictedOriginalSample(type, x, m, sqrtAlpha, sqrtBeta);
      const predEpsilon = predictedNoise(type, x, m, sqrtAlpha, sqrtBeta);
      // 4. clip "predicted x₀" (ε stays the model's, as with use_clipped_model_output=False)
      if (clipSample) predOriginal = Math.min(Math.max(predOriginal, -range), range);
      // 7. x_{t−1} without "random noise" of formula (12)
      prevSample[i] = sqrtAlphaPrev * predOriginal + directionCoeff * predEpsilon;
    }
    return { prevSample };
  }
}
