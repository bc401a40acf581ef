/**
 * Multistep latent consistency sampling (Luo et al. 2023, https://arxiv.org/abs/2310.04378,
 * Algorithm 3), a port of diffusers' `LCMScheduler`: each step maps x_t to the consistency
 * function's x₀ estimate (`denoised`), then re-noises it to the next timestep.
 */
import type { Scheduler, SchedulerConfig } from '../types.js';
import { linspace } from './numpy-like.js';
import { makeAlphasCumprod, noiseScheduleOptions } from './noise-schedule.js';
import {
  checkSameLength,
  option,
  predictionType,
  rejectEnabled,
  SchedulerConfigError,
  type PredictionType,
} from './scheduler-config.js';
import { StepIndex } from './sigma-schedule.js';
import { noiseFor } from './standard-normal.js';

export const LCM_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  original_inference_steps: 50,
  clip_sample: false,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: 'epsilon',
  thresholding: false,
  timestep_spacing: 'leading',
  timestep_scaling: 10.0,
  rescale_betas_zero_snr: false,
} as const;

/** σ_data of the consistency-model boundary condition (Song et al. 2023, Appendix C). */
const SIGMA_DATA = 0.5;

export class LcmScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];

  private readonly alphasCumprod: Float32Array;
  private readonly finalAlphaCumprod: number;
  private readonly numTrainTimesteps: number;
  private readonly originalInferenceSteps: number;
  private readonly predictionType: PredictionType;
  private readonly clipSample: boolean;
  private readonly clipSampleRange: number;
  private readonly timestepScaling: number;
  private readonly stepIndex = new StepIndex('throw');

  constructor(config: SchedulerConfig) {
    rejectEnabled(config, ['thresholding'], 'LCMScheduler');
    const schedule = noiseScheduleOptions(
      config,
      { betaStart: LCM_DEFAULTS.beta_start, betaEnd: LCM_DEFAULTS.beta_end, betaSchedule: LCM_DEFAULTS.beta_schedule },
      true,
    );
    this.numTrainTimesteps = schedule.numTrainTimesteps;
    this.alphasCumprod = makeAlphasCumprod(schedule);
    this.finalAlphaCumprod = option(config, 'set_alpha_to_one', LCM_DEFAULTS.set_alpha_to_one)
      ? 1
      : (this.alphasCumprod[0] as number);
    this.originalInferenceSteps = option(config, 'original_inference_steps', LCM_DEFAULTS.original_inference_steps);
    if (
      !Number.isInteger(this.originalInferenceSteps) ||
      this.originalInferenceSteps < 1 ||
      this.originalInferenceSteps > this.numTrainTimesteps
    ) {
      throw new SchedulerConfigError(
        'original_inference_steps',
        `original_inference_steps must be an integer from 1 to num_train_timesteps (${this.numTrainTimesteps})`,
      );
    }
    this.predictionType = predictionType(config);
    this.clipSample = option(config, 'clip_sample', LCM_DEFAULTS.clip_sample);
    this.clipSampleRange = option(config, 'clip_sample_range', LCM_DEFAULTS.clip_sample_range);
    this.timestepScaling = option(config, 'timestep_scaling', LCM_DEFAULTS.timestep_scaling);
  }

  setTimesteps(numInferenceSteps: number): void {
    const originalSteps = this.originalInferenceSteps;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > originalSteps) {
      throw new SchedulerConfigError(
        'num_inference_steps',
        `LCMScheduler: num_inference_steps must be an integer from 1 to original_inference_steps (${originalSteps}), got ${numInferenceSteps}`,
      );
    }
    // the distillation schedule: every k-th training timestep, k = T / original_inference_steps
    const k = Math.floor(this.numTrainTimesteps / originalSteps);
    const origin: number[] = [];
    for (let i = originalSteps; i >= 1; i--) origin.push(i * k - 1);
    // select (approximately) evenly spaced entries of it, noisiest first
    this.timesteps = linspace(0, origin.length, numInferenceSteps, false).map(
      (position) => origin[Math.floor(position)] as number,
    );
    this.stepIndex.reset();
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(
    modelOutput: Float32Array,
    t: number,
    sample: Float32Array,
    noise?: Float32Array,
  ): { prevSample: Float32Array; denoised: Float32Array } {
    if (this.timesteps.length === 0) throw new Error('LCMScheduler: call setTimesteps before step');
    checkSameLength(modelOutput, sample);
    const index = this.stepIndex.current(this.timesteps, t);

    // 1. get previous step value
    const prevTimestep = this.timesteps[index + 1] ?? t;

    // 2. compute alphas, betas
    const alphaProdT = this.alphasCumprod[t];
    if (!Number.isInteger(t) || alphaProdT === undefined) {
      throw new RangeError(`LCMScheduler: timestep ${t} is outside 0…${this.numTrainTimesteps - 1}`);
    }
    const alphaProdTPrev =
      prevTimestep >= 0 ? (this.alphasCumprod[prevTimestep] as number) : this.finalAlphaCumprod;
    const betaProdT = 1 - alphaProdT;
    const betaProdTPrev = 1 - alphaProdTPrev;

    // 3. get scalings for boundary conditions: c_skip(0) = 1, c_out(0) = 0
    const scaledTimestep = t * this.timestepScaling;
    const cSkip = SIGMA_DATA ** 2 / (scaledTimestep ** 2 + SIGMA_DATA ** 2);
    const cOut = scaledTimestep / Math.sqrt(scaledTimestep ** 2 + SIGMA_DATA ** 2);

    const sqrtAlpha = Math.sqrt(alphaProdT);
    const sqrtBeta = Math.sqrt(betaProdT);
    const denoised = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i] as number;
      const m = modelOutput[i] as number;
      // 4. compute the predicted original sample x₀ from the model parameterisation
      let x0 =
        this.predictionType === 'epsilon'
          ? (x - sqrtBeta * m) / sqrtAlpha
          : this.predictionType === 'v_prediction'
            ? sqrtAlpha * x - sqrtBeta * m
            : m;
      // 5. clip "predicted x₀"
      if (this.clipSample) x0 = Math.min(Math.max(x0, -this.clipSampleRange), this.clipSampleRange);
      // 6. denoise the model output using the boundary conditions
      denoised[i] = cOut * x0 + cSkip * x;
    }

    // 7. inject noise z ~ N(0, I) for multistep inference; not on the final timestep, hence
    // not for one-step sampling either
    this.stepIndex.advance();
    if (index === this.timesteps.length - 1) return { prevSample: denoised.slice(), denoised };
    const z = noiseFor(sample, noise);
    const sqrtAlphaPrev = Math.sqrt(alphaProdTPrev);
    const sqrtBetaPrev = Math.sqrt(betaProdTPrev);
    const prevSample = denoised.map((d, i) => sqrtAlphaPrev * d + sqrtBetaPrev * (z[i] as number));
    return { prevSample, denoised };
  }
}
