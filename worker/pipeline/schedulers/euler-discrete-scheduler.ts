/**
 * Euler sampler for the probability-flow ODE, Algorithm 2 of Karras et al. 2022
 * (https://arxiv.org/abs/2206.00364) without churn; a port of diffusers' `EulerDiscreteScheduler`
 * (after crowsonkb's k-diffusion `sample_euler`).
 */
import { eulerStep } from '../kernels/index.js';
import type { SchedulerConfig } from '../types.js';
import { choice, option, optionalNumber, rejectEnabled } from './scheduler-config.js';
import { checkSameLength, outputFor } from './sample-buffers.js';
import { denoiserScalings, finalSigma, interpolatedSigmas, karrasSchedule, SigmaScheduler } from './sigma-schedule.js';
import { checkNumInferenceSteps, spacedTimesteps, trainingSigmas } from './timestep-schedule.js';

export const EULER_DISCRETE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  prediction_type: 'epsilon',
  interpolation_type: 'linear',
  use_karras_sigmas: false,
  timestep_spacing: 'linspace',
  timestep_type: 'discrete',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  final_sigmas_type: 'zero',
} as const;

export class EulerDiscreteScheduler extends SigmaScheduler {
  readonly takesNoise = false; // s_churn = 0
  private readonly useKarrasSigmas: boolean;
  private readonly sigmaMin: number | undefined;
  private readonly sigmaMax: number | undefined;
  private readonly continuousTimesteps: boolean;
  private readonly finalSigmasType: 'zero' | 'sigma_min';

  constructor(config: SchedulerConfig) {
    rejectEnabled(config, ['use_exponential_sigmas', 'use_beta_sigmas'], 'EulerDiscreteScheduler');
    super('EulerDiscreteScheduler', config, EULER_DISCRETE_DEFAULTS);
    choice(config, 'interpolation_type', ['linear'] as const, EULER_DISCRETE_DEFAULTS.interpolation_type);
    this.useKarrasSigmas = option(config, 'use_karras_sigmas', EULER_DISCRETE_DEFAULTS.use_karras_sigmas);
    this.sigmaMin = optionalNumber(config, 'sigma_min');
    this.sigmaMax = optionalNumber(config, 'sigma_max');
    const timestepType = choice(config, 'timestep_type', ['discrete', 'continuous'] as const, 'discrete');
    // diffusers only switches to EDM's c_noise = ¼·ln σ for v-prediction
    this.continuousTimesteps = timestepType === 'continuous' && this.predictionType === 'v_prediction';
    this.finalSigmasType = choice(config, 'final_sigmas_type', ['zero', 'sigma_min'] as const, 'zero');
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.numTrainTimesteps);
    const f = Math.fround;
    // linspace keeps fractional timesteps (float32), leading/trailing are integers
    let timesteps = spacedTimesteps(this.spacing, this.numTrainTimesteps, numInferenceSteps, false);
    if (this.spacing.spacing === 'linspace') timesteps = timesteps.map(f);

    const training = trainingSigmas(this.alphasCumprod);
    let sigmas = interpolatedSigmas(timesteps, training);
    if (this.useKarrasSigmas) {
      // Karras et al. 2022, eq. 5, between the schedule's own end points; timesteps follow σ
      const sigmaMin = this.sigmaMin ?? (sigmas[sigmas.length - 1] as number);
      const sigmaMax = this.sigmaMax ?? (sigmas[0] as number);
      ({ sigmas, timesteps } = karrasSchedule(sigmaMin, sigmaMax, numInferenceSteps, training));
    }
    timesteps = this.continuousTimesteps ? sigmas.map((s) => f(0.25 * f(Math.log(f(s))))) : timesteps.map(f);
    this.startRun(timesteps, sigmas, finalSigma(this.alphasCumprod, this.finalSigmasType));
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _noise?: Float32Array, out?: Float32Array) {
    const { sigma, sigmaNext } = this.currentSigmas(t);
    checkSameLength(modelOutput, sample);
    // s_churn = 0: γ = 0, so σ̂ = σ and no noise is added
    const sigmaHat = sigma;
    const dt = sigmaNext - sigmaHat;
    const { cSkip, cOut } = denoiserScalings(this.predictionType, sigmaHat);

    const prevSample = outputFor(sample, out);
    // 1. predicted original sample x₀ = c_skip·x + c_out·m; 2. ODE derivative d = (x − x₀)/σ̂;
    // 3. Euler step from σ̂ to the next σ: x + d·dt
    eulerStep(sample, modelOutput, prevSample, { cSkip, cOut, sigma: sigmaHat, dt });
    this.advance();
    return { prevSample };
  }
}
