/**
 * Ancestral Euler sampling (k-diffusion's `sample_euler_ancestral`, Karras et al. 2022
 * https://arxiv.org/abs/2206.00364): an Euler step down to σ_down, then fresh noise of scale
 * σ_up, with σ_down² + σ_up² = σ_next². A port of diffusers' `EulerAncestralDiscreteScheduler`.
 */
import type { Scheduler, SchedulerConfig } from '../types.js';
import { kDiffusionAlphasCumprod } from './noise-schedule.js';
import {
  checkSameLength,
  numTrainTimesteps,
  option,
  predictionType,
  SchedulerConfigError,
  type PredictionType,
} from './scheduler-config.js';
import { initNoiseSigmaFor, interpolatedSigmas, scaleBySigma, StepIndex } from './sigma-schedule.js';
import { noiseFor } from './standard-normal.js';
import {
  checkNumInferenceSteps,
  checkSpacing,
  spacedTimesteps,
  trainingSigmas,
  type TimestepSpacing,
} from './timestep-schedule.js';

export const EULER_ANCESTRAL_DISCRETE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  prediction_type: 'epsilon',
  timestep_spacing: 'linspace',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} as const;

export class EulerAncestralDiscreteScheduler implements Scheduler {
  timesteps: number[] = [];
  initNoiseSigma: number;

  private readonly alphasCumprod: Float32Array;
  private readonly numTrainTimesteps: number;
  private readonly predictionType: PredictionType;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  /** σ per step, then 0, float32. */
  private sigmas: Float32Array;
  private readonly stepIndex = new StepIndex('throw');

  constructor(config: SchedulerConfig) {
    this.numTrainTimesteps = numTrainTimesteps(config);
    this.alphasCumprod = kDiffusionAlphasCumprod(config);
    this.predictionType = predictionType(config);
    this.spacing = checkSpacing(option(config, 'timestep_spacing', EULER_ANCESTRAL_DISCRETE_DEFAULTS.timestep_spacing));
    this.stepsOffset = option(config, 'steps_offset', EULER_ANCESTRAL_DISCRETE_DEFAULTS.steps_offset);

    const training = trainingSigmas(this.alphasCumprod);
    this.sigmas = new Float32Array(training.length + 1);
    this.sigmas.set(training.slice().reverse());
    this.initNoiseSigma = initNoiseSigmaFor(this.sigmas, this.spacing);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.numTrainTimesteps);
    let timesteps = spacedTimesteps(this.spacing, this.numTrainTimesteps, numInferenceSteps, this.stepsOffset, false);
    timesteps = timesteps.map(Math.fround);
    const sigmas = interpolatedSigmas(timesteps, trainingSigmas(this.alphasCumprod));
    this.sigmas = Float32Array.from([...sigmas, 0]);
    this.timesteps = timesteps;
    this.initNoiseSigma = initNoiseSigmaFor(this.sigmas, this.spacing);
    this.stepIndex.reset();
  }

  /** c_in(σ) = 1/√(σ² + 1). */
  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const index = this.stepIndex.current(this.timesteps, t);
    return scaleBySigma(sample, this.sigmas[index] as number);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: Float32Array): { prevSample: Float32Array } {
    if (this.timesteps.length === 0) {
      throw new Error('EulerAncestralDiscreteScheduler: call setTimesteps before step');
    }
    checkSameLength(modelOutput, sample);
    const index = this.stepIndex.current(this.timesteps, t);
    const sigmaFrom = this.sigmas[index] as number;
    const sigmaTo = this.sigmas[index + 1];
    if (sigmaTo === undefined) {
      throw new SchedulerConfigError('timestep', 'EulerAncestralDiscreteScheduler: no steps left');
    }
    const sigma = sigmaFrom;
    // split the move to σ_to into a deterministic part (σ_down) and fresh noise (σ_up)
    const sigmaUp = Math.sqrt((sigmaTo ** 2 * (sigmaFrom ** 2 - sigmaTo ** 2)) / sigmaFrom ** 2);
    const sigmaDown = Math.sqrt(Math.max(sigmaTo ** 2 - sigmaUp ** 2, 0));
    const dt = sigmaDown - sigma;
    const vScale = -sigma / Math.sqrt(sigma * sigma + 1);
    const vSkip = 1 / (sigma * sigma + 1);
    const z = noiseFor(sample, noise);

    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i] as number;
      const m = modelOutput[i] as number;
      // 1. compute predicted original sample (x₀) from σ-scaled predicted noise
      const x0 =
        this.predictionType === 'epsilon'
          ? x - sigma * m
          : this.predictionType === 'v_prediction'
            ? m * vScale + x * vSkip
            : m;
      // 2. convert to an ODE derivative, step to σ_down
      const derivative = (x - x0) / sigma;
      // 3. add noise z ~ N(0, I) of scale σ_up
      prevSample[i] = x + derivative * dt + (z[i] as number) * sigmaUp;
    }
    this.stepIndex.advance();
    return { prevSample };
  }
}
