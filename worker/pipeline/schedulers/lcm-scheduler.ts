/**
 * Multistep latent consistency sampling (Luo et al. 2023, https://arxiv.org/abs/2310.04378,
 * Algorithm 3), a port of diffusers' `LCMScheduler`: each step maps x_t to the consistency
 * function's x₀ estimate (`denoised`), then re-noises it to the next timestep.
 */
import { axpby, lcmDenoise } from '../kernels/index.js';
import type { Scheduler, SchedulerConfig } from '../types.js';
import { linspace } from './numpy-like.js';
import { DiscreteAlphas, predictedOriginalSample } from './noise-schedule.js';
import { option, predictionType, rejectEnabled, SchedulerConfigError, type PredictionType } from './scheduler-config.js';
import { checkSameLength, outputFor, reusable, unscaledModelInput } from './sample-buffers.js';
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
  readonly takesNoise = true;
  readonly scalesModelInput = false;
  timesteps: number[] = [];

  private readonly alphas: DiscreteAlphas;
  private readonly originalInferenceSteps: number;
  private readonly predictionType: PredictionType;
  private readonly clipSample: boolean;
  private readonly clipSampleRange: number;
  private readonly timestepScaling: number;
  private readonly stepIndex = new StepIndex('throw');
  /** The last step's x₀ estimate, returned as `denoised`. */
  private denoised: Float32Array | undefined;

  constructor(config: SchedulerConfig) {
    rejectEnabled(config, ['thresholding'], 'LCMScheduler');
    this.alphas = new DiscreteAlphas('LCMScheduler', config, LCM_DEFAULTS);
    const numTrainTimesteps = this.alphas.numTrainTimesteps;
    this.originalInferenceSteps = option(config, 'original_inference_steps', LCM_DEFAULTS.original_inference_steps);
    if (
      !Number.isInteger(this.originalInferenceSteps) ||
      this.originalInferenceSteps < 1 ||
      this.originalInferenceSteps > numTrainTimesteps
    ) {
      throw new SchedulerConfigError(
        'original_inference_steps',
        `original_inference_steps must be an integer from 1 to num_train_timesteps (${numTrainTimesteps})`,
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
    const k = Math.floor(this.alphas.numTrainTimesteps / originalSteps);
    const origin: number[] = [];
    for (let i = originalSteps; i >= 1; i--) origin.push(i * k - 1);
    // select (approximately) evenly spaced entries of it, noisiest first
    this.timesteps = linspace(0, origin.length, numInferenceSteps, false).map(
      (position) => origin[Math.floor(position)] as number,
    );
    this.stepIndex.reset();
  }

  scaleModelInput(sample: Float32Array, _t: number, out?: Float32Array): Float32Array {
    return unscaledModelInput(sample, out);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: Float32Array, out?: Float32Array) {
    if (this.timesteps.length === 0) throw new Error('LCMScheduler: call setTimesteps before step');
    checkSameLength(modelOutput, sample);
    const index = this.stepIndex.current(this.timesteps, t);

    // 1. get previous step value
    const prevTimestep = this.timesteps[index + 1] ?? t;

    // 2. compute alphas, betas
    const alphaProdT = this.alphas.at(t);
    const alphaProdTPrev = this.alphas.atPrev(prevTimestep);
    const betaProdT = 1 - alphaProdT;
    const betaProdTPrev = 1 - alphaProdTPrev;

    // 3. get scalings for boundary conditions: c_skip(0) = 1, c_out(0) = 0
    const scaledTimestep = t * this.timestepScaling;
    const cSkip = SIGMA_DATA ** 2 / (scaledTimestep ** 2 + SIGMA_DATA ** 2);
    const cOut = scaledTimestep / Math.sqrt(scaledTimestep ** 2 + SIGMA_DATA ** 2);

    const { predictionType: type, clipSample, clipSampleRange: range } = this;
    const sqrtAlpha = Math.sqrt(alphaProdT);
    const sqrtBeta = Math.sqrt(betaProdT);
    const denoised = (this.denoised = reusable(this.denoised, sample.length, sample));
    if (type === 'epsilon') {
      // steps 4–6 below in one kernel pass
      const clipRange = clipSample ? range : Infinity;
      lcmDenoise(sample, modelOutput, denoised, { sqrtAlpha, sqrtBeta, clipRange, cOut, cSkip });
    } else {
      for (let i = 0; i < sample.length; i++) {
        const x = sample[i] as number;
        // 4. compute the predicted original sample x₀ from the model parameterisation
        let x0 = predictedOriginalSample(type, x, modelOutput[i] as number, sqrtAlpha, sqrtBeta);
        // 5. clip "predicted x₀"
        if (clipSample) x0 = Math.min(Math.max(x0, -range), range);
        // 6. denoise the model output using the boundary conditions
        denoised[i] = cOut * x0 + cSkip * x;
      }
    }

    // 7. inject noise z ~ N(0, I) for multistep inference; not on the final timestep, hence
    // not for one-step sampling either
    this.stepIndex.advance();
    const prevSample = outputFor(sample, out);
    if (index === this.timesteps.length - 1) {
      prevSample.set(denoised);
      return { prevSample, denoised };
    }
    const z = noiseFor(sample, noise);
    const sqrtAlphaPrev = Math.sqrt(alphaProdTPrev);
    const sqrtBetaPrev = Math.sqrt(betaProdTPrev);
    axpby(sqrtAlphaPrev, denoised, sqrtBetaPrev, z, prevSample);
    return { prevSample, denoised };
  }
}
