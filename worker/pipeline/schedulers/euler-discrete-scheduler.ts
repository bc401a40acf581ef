/**
 * Euler sampler for the probability-flow ODE, Algorithm 2 of Karras et al. 2022
 * (https://arxiv.org/abs/2206.00364) without churn; a port of diffusers' `EulerDiscreteScheduler`
 * (after crowsonkb's k-diffusion `sample_euler`).
 */
import type { Scheduler, SchedulerConfig } from '../types.js';
import { kDiffusionAlphasCumprod } from './noise-schedule.js';
import {
  checkSameLength,
  choice,
  numTrainTimesteps,
  option,
  optionalNumber,
  predictionType,
  rejectEnabled,
  SchedulerConfigError,
  type PredictionType,
} from './scheduler-config.js';
import { initNoiseSigmaFor, interpolatedSigmas, scaleBySigma, StepIndex } from './sigma-schedule.js';
import {
  checkNumInferenceSteps,
  checkSpacing,
  karrasSigmas,
  logSigmas,
  sigmaToT,
  spacedTimesteps,
  trainingSigmas,
  type TimestepSpacing,
} from './timestep-schedule.js';

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

export class EulerDiscreteScheduler implements Scheduler {
  timesteps: number[] = [];
  initNoiseSigma: number;

  private readonly alphasCumprod: Float32Array;
  private readonly numTrainTimesteps: number;
  private readonly predictionType: PredictionType;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  private readonly useKarrasSigmas: boolean;
  private readonly sigmaMin: number | undefined;
  private readonly sigmaMax: number | undefined;
  private readonly continuousTimesteps: boolean;
  private readonly finalSigmaMin: boolean;
  /** σ per step plus the final σ (0 or σ_min), float32. */
  private sigmas: Float32Array;
  private readonly stepIndex = new StepIndex('throw');

  constructor(config: SchedulerConfig) {
    rejectEnabled(config, ['use_exponential_sigmas', 'use_beta_sigmas'], 'EulerDiscreteScheduler');
    this.numTrainTimesteps = numTrainTimesteps(config);
    this.alphasCumprod = kDiffusionAlphasCumprod(config);
    this.predictionType = predictionType(config);
    choice(config, 'interpolation_type', ['linear'] as const, EULER_DISCRETE_DEFAULTS.interpolation_type);
    this.useKarrasSigmas = option(config, 'use_karras_sigmas', EULER_DISCRETE_DEFAULTS.use_karras_sigmas);
    this.sigmaMin = optionalNumber(config, 'sigma_min');
    this.sigmaMax = optionalNumber(config, 'sigma_max');
    this.spacing = checkSpacing(option(config, 'timestep_spacing', EULER_DISCRETE_DEFAULTS.timestep_spacing));
    this.stepsOffset = option(config, 'steps_offset', EULER_DISCRETE_DEFAULTS.steps_offset);
    const timestepType = choice(config, 'timestep_type', ['discrete', 'continuous'] as const, 'discrete');
    // diffusers only switches to EDM's c_noise = ¼·ln σ for v-prediction
    this.continuousTimesteps = timestepType === 'continuous' && this.predictionType === 'v_prediction';
    this.finalSigmaMin = choice(config, 'final_sigmas_type', ['zero', 'sigma_min'] as const, 'zero') === 'sigma_min';

    // before set_timesteps: every training σ, noisiest first, then 0
    const training = trainingSigmas(this.alphasCumprod);
    this.sigmas = new Float32Array(training.length + 1);
    this.sigmas.set(training.slice().reverse());
    this.initNoiseSigma = initNoiseSigmaFor(this.sigmas, this.spacing);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.numTrainTimesteps);
    // linspace keeps fractional timesteps (float32), leading/trailing are integers
    let timesteps = spacedTimesteps(this.spacing, this.numTrainTimesteps, numInferenceSteps, this.stepsOffset, false);
    if (this.spacing === 'linspace') timesteps = timesteps.map(Math.fround);

    const training = trainingSigmas(this.alphasCumprod);
    let sigmas = interpolatedSigmas(timesteps, training);
    if (this.useKarrasSigmas) {
      // Karras et al. 2022, eq. 5, between the schedule's own end points; timesteps follow σ
      const sigmaMin = this.sigmaMin ?? (sigmas[sigmas.length - 1] as number);
      const sigmaMax = this.sigmaMax ?? (sigmas[0] as number);
      sigmas = karrasSigmas(sigmaMin, sigmaMax, numInferenceSteps);
      const logs = logSigmas(training);
      timesteps = sigmas.map((s) => sigmaToT(s, logs));
    }

    const f = Math.fround;
    const a0 = this.alphasCumprod[0] as number;
    const sigmaLast = this.finalSigmaMin ? Math.sqrt(f(f(1 - a0) / a0)) : 0;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);

    this.timesteps = this.continuousTimesteps
      ? Array.from(this.sigmas.subarray(0, -1), (s) => f(0.25 * f(Math.log(s))))
      : timesteps.map(f);
    this.initNoiseSigma = initNoiseSigmaFor(this.sigmas, this.spacing);
    this.stepIndex.reset();
  }

  /** c_in(σ) = 1/√(σ² + 1) (Karras et al. 2022, Table 1), so the model sees unit variance. */
  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const index = this.stepIndex.current(this.timesteps, t);
    return scaleBySigma(sample, this.sigmas[index] as number);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): { prevSample: Float32Array } {
    if (this.timesteps.length === 0) throw new Error('EulerDiscreteScheduler: call setTimesteps before step');
    checkSameLength(modelOutput, sample);
    const index = this.stepIndex.current(this.timesteps, t);
    const sigma = this.sigmas[index] as number;
    const sigmaNext = this.sigmas[index + 1];
    if (sigmaNext === undefined) throw new SchedulerConfigError('timestep', 'EulerDiscreteScheduler: no steps left');
    // s_churn = 0: γ = 0, so σ̂ = σ and no noise is added
    const sigmaHat = sigma;
    const dt = sigmaNext - sigmaHat;
    const vScale = -sigma / Math.sqrt(sigma * sigma + 1);
    const vSkip = 1 / (sigma * sigma + 1);

    const prevSample = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i] as number;
      const m = modelOutput[i] as number;
      // 1. compute predicted original sample (x₀) from σ-scaled predicted noise
      const x0 =
        this.predictionType === 'epsilon'
          ? x - sigmaHat * m
          : this.predictionType === 'v_prediction'
            ? m * vScale + x * vSkip // denoised = model_output · c_out + input · c_skip
            : m;
      // 2. convert to an ODE derivative d = (x − x₀)/σ̂
      const derivative = (x - x0) / sigmaHat;
      // 3. Euler step from σ̂ to the next σ
      prevSample[i] = x + derivative * dt;
    }
    this.stepIndex.advance();
    return { prevSample };
  }
}
