/**
 * Ancestral Euler sampling (k-diffusion's `sample_euler_ancestral`, Karras et al. 2022
 * https://arxiv.org/abs/2206.00364): an Euler step down to σ_down, then fresh noise of scale
 * σ_up, with σ_down² + σ_up² = σ_next². A port of diffusers' `EulerAncestralDiscreteScheduler`.
 */
import { eulerStep } from '../kernels/index.js';
import type { SchedulerConfig } from '../types.js';
import { checkSameLength, outputFor } from './sample-buffers.js';
import { denoiserScalings, interpolatedSigmas, SigmaScheduler } from './sigma-schedule.js';
import { noiseFor } from './standard-normal.js';
import { checkNumInferenceSteps, spacedTimesteps, trainingSigmas } from './timestep-schedule.js';

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

export class EulerAncestralDiscreteScheduler extends SigmaScheduler {
  readonly takesNoise = true;
  constructor(config: SchedulerConfig) {
    super('EulerAncestralDiscreteScheduler', config, EULER_ANCESTRAL_DISCRETE_DEFAULTS);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.numTrainTimesteps);
    const timesteps = spacedTimesteps(this.spacing, this.numTrainTimesteps, numInferenceSteps, false).map(Math.fround);
    this.startRun(timesteps, interpolatedSigmas(timesteps, trainingSigmas(this.alphasCumprod)), 0);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: Float32Array, out?: Float32Array) {
    const { sigma: sigmaFrom, sigmaNext: sigmaTo } = this.currentSigmas(t);
    checkSameLength(modelOutput, sample);
    const sigma = sigmaFrom;
    // split the move to σ_to into a deterministic part (σ_down) and fresh noise (σ_up)
    const sigmaUp = Math.sqrt((sigmaTo ** 2 * (sigmaFrom ** 2 - sigmaTo ** 2)) / sigmaFrom ** 2);
    const sigmaDown = Math.sqrt(Math.max(sigmaTo ** 2 - sigmaUp ** 2, 0));
    const dt = sigmaDown - sigma;
    const { cSkip, cOut } = denoiserScalings(this.predictionType, sigma);
    const z = noiseFor(sample, noise);

    const prevSample = outputFor(sample, out);
    // 1. predicted original sample x₀ = c_skip·x + c_out·m; 2. ODE derivative d = (x − x₀)/σ,
    // step to σ_down; 3. add noise z ~ N(0, I) of scale σ_up
    eulerStep(sample, modelOutput, prevSample, { cSkip, cOut, sigma, dt }, { z, sigmaUp });
    this.advance();
    return { prevSample };
  }
}
