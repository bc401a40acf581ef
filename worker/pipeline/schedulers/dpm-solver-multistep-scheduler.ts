/**
 * DPM-Solver++ multistep (Lu et al. 2022, https://arxiv.org/abs/2211.01095), a port of diffusers'
 * `DPMSolverMultistepScheduler`: the data-prediction ODE solver "dpmsolver++", 2M (order 2,
 * Algorithm 2) by default, with orders 1 and 3 too; the noise-prediction "dpmsolver"
 * (https://arxiv.org/abs/2206.00927); and their SDE variants "sde-dpmsolver++" (DPM++ 2M SDE) and
 * "sde-dpmsolver" (orders 1 and 2), which take the step's noise.
 */
import { dpmDataFromEpsilon, dpmUpdate } from '../kernels/index.js';
import type { Scheduler, SchedulerConfig } from '../types.js';
import { kDiffusionAlphasCumprod } from './noise-schedule.js';
import { arange, linspace, roundHalfEven } from './numpy-like.js';
import {
  choice,
  numTrainTimesteps,
  option,
  optionalNumber,
  predictionType,
  rejectEnabled,
  SchedulerConfigError,
  type PredictionType,
} from './scheduler-config.js';
import { checkSameLength, outputFor, reusable, unscaledModelInput } from './sample-buffers.js';
import { finalSigma, interpolatedSigmas, karrasSchedule, StepIndex } from './sigma-schedule.js';
import { noiseFor } from './standard-normal.js';
import { checkNumInferenceSteps, spacingOptions, trainingSigmas, type SpacingOptions } from './timestep-schedule.js';

type AlgorithmType = 'dpmsolver++' | 'dpmsolver' | 'sde-dpmsolver++' | 'sde-dpmsolver';

export const DPM_SOLVER_MULTISTEP_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  solver_order: 2,
  prediction_type: 'epsilon',
  thresholding: false,
  algorithm_type: 'dpmsolver++',
  solver_type: 'midpoint',
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_lu_lambdas: false,
  final_sigmas_type: 'zero',
  timestep_spacing: 'linspace',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} as const;

/** VP coefficients of x_σ: α_t = 1/√(σ² + 1), σ_t = σ·α_t, and the half log-SNR λ = ln(α_t/σ_t). */
function vpCoefficients(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaT = sigma * alpha;
  return { alpha, sigma: sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
}

export class DpmSolverMultistepScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  readonly scalesModelInput = false;
  timesteps: number[] = [];

  private readonly alphasCumprod: Float32Array;
  private readonly numTrainTimesteps: number;
  private readonly predictionType: PredictionType;
  private readonly solverOrder: number;
  private readonly algorithm: AlgorithmType;
  /** x₀ (data prediction, the "++" algorithms) or ε (noise prediction) is what gets integrated. */
  private readonly dataPrediction: boolean;
  /** The SDE variants add σ-scaled noise to every update. */
  readonly takesNoise: boolean;
  private readonly heun: boolean;
  private readonly lowerOrderFinal: boolean;
  private readonly eulerAtFinal: boolean;
  private readonly useKarrasSigmas: boolean;
  private readonly finalSigmasType: 'zero' | 'sigma_min';
  private readonly lambdaMinClipped: number;
  private readonly spacing: SpacingOptions;

  /** σ per step plus the final σ, float32. */
  private sigmas = new Float32Array(0);
  /** The last `solverOrder` data predictions x₀, oldest first. */
  private modelOutputs: (Float32Array | undefined)[] = [];
  private lowerOrderNums = 0;
  private readonly stepIndex = new StepIndex('last');

  constructor(config: SchedulerConfig) {
    rejectEnabled(
      config,
      ['thresholding', 'use_lu_lambdas', 'use_exponential_sigmas', 'use_beta_sigmas', 'use_flow_sigmas', 'variance_type'],
      'DPMSolverMultistepScheduler',
    );
    this.numTrainTimesteps = numTrainTimesteps(config);
    this.alphasCumprod = kDiffusionAlphasCumprod(config, DPM_SOLVER_MULTISTEP_DEFAULTS);
    this.predictionType = predictionType(config);
    // diffusers maps DEIS's name onto DPM-Solver++
    const algorithm = choice(
      config,
      'algorithm_type',
      ['dpmsolver++', 'deis', 'dpmsolver', 'sde-dpmsolver++', 'sde-dpmsolver'] as const,
      DPM_SOLVER_MULTISTEP_DEFAULTS.algorithm_type,
    );
    this.algorithm = algorithm === 'deis' ? 'dpmsolver++' : algorithm;
    this.dataPrediction = this.algorithm === 'dpmsolver++' || this.algorithm === 'sde-dpmsolver++';
    this.takesNoise = this.algorithm === 'sde-dpmsolver++' || this.algorithm === 'sde-dpmsolver';
    this.solverOrder = option(config, 'solver_order', DPM_SOLVER_MULTISTEP_DEFAULTS.solver_order);
    if (![1, 2, 3].includes(this.solverOrder)) {
      throw new SchedulerConfigError('solver_order', 'solver_order must be 1, 2 or 3');
    }
    if (this.takesNoise && this.solverOrder === 3) {
      // diffusers' third-order update has no SDE branch (it fails there)
      throw new SchedulerConfigError('solver_order', `solver_order 3 is not supported for ${this.algorithm}`);
    }
    // diffusers maps UniPC's and DEIS's solver types onto midpoint
    const solverType = choice(
      config,
      'solver_type',
      ['midpoint', 'heun', 'logrho', 'bh1', 'bh2'] as const,
      DPM_SOLVER_MULTISTEP_DEFAULTS.solver_type,
    );
    this.heun = solverType === 'heun';
    this.lowerOrderFinal = option(config, 'lower_order_final', DPM_SOLVER_MULTISTEP_DEFAULTS.lower_order_final);
    this.eulerAtFinal = option(config, 'euler_at_final', DPM_SOLVER_MULTISTEP_DEFAULTS.euler_at_final);
    this.useKarrasSigmas = option(config, 'use_karras_sigmas', DPM_SOLVER_MULTISTEP_DEFAULTS.use_karras_sigmas);
    this.finalSigmasType = choice(
      config,
      'final_sigmas_type',
      ['zero', 'sigma_min'] as const,
      DPM_SOLVER_MULTISTEP_DEFAULTS.final_sigmas_type,
    );
    if (!this.dataPrediction && this.finalSigmasType === 'zero') {
      // as diffusers' __init__ raises
      throw new SchedulerConfigError(
        'final_sigmas_type',
        `final_sigmas_type "zero" is not supported for algorithm_type "${this.algorithm}"; use "sigma_min"`,
      );
    }
    this.lambdaMinClipped = optionalNumber(config, 'lambda_min_clipped') ?? -Infinity;
    this.spacing = spacingOptions(config, DPM_SOLVER_MULTISTEP_DEFAULTS);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.numTrainTimesteps);
    const f = Math.fround;
    const n = numInferenceSteps;
    const numTrain = this.numTrainTimesteps;

    // clip the minimum of λ(t) for numerical stability (critical for the cosine schedule):
    // searchsorted over λ flipped to increasing order
    let clippedIdx = 0;
    for (let t = numTrain - 1; t >= 0; t--) {
      const a = this.alphasCumprod[t] as number;
      const lambda = f(f(Math.log(f(Math.sqrt(a)))) - f(Math.log(f(Math.sqrt(f(1 - a))))));
      if (lambda < this.lambdaMinClipped) clippedIdx += 1;
      else break;
    }
    const lastTimestep = numTrain - clippedIdx;

    // "linspace", "leading", "trailing" as in Table 2 of https://arxiv.org/abs/2305.08891
    let timesteps: number[];
    if (this.spacing.spacing === 'linspace') {
      timesteps = linspace(0, lastTimestep - 1, n + 1).map(roundHalfEven).reverse().slice(0, -1);
    } else if (this.spacing.spacing === 'leading') {
      const stepRatio = Math.floor(lastTimestep / (n + 1));
      timesteps = [];
      for (let i = n; i >= 1; i--) timesteps.push(i * stepRatio + this.spacing.stepsOffset);
    } else {
      const stepRatio = numTrain / n;
      timesteps = arange(lastTimestep, 0, -stepRatio).map((t) => roundHalfEven(t) - 1);
    }

    const training = trainingSigmas(this.alphasCumprod);
    let sigmas: number[];
    if (this.useKarrasSigmas) {
      // Karras et al. 2022, eq. 5, over the full training range; timesteps rounded to integers
      const karras = karrasSchedule(training[0] as number, training[training.length - 1] as number, n, training);
      sigmas = karras.sigmas;
      timesteps = karras.timesteps.map(roundHalfEven);
    } else {
      sigmas = interpolatedSigmas(timesteps, training);
    }

    this.sigmas = Float32Array.from([...sigmas, finalSigma(this.alphasCumprod, this.finalSigmasType)]);
    this.timesteps = timesteps;
    this.modelOutputs = new Array<Float32Array | undefined>(this.solverOrder).fill(undefined);
    this.lowerOrderNums = 0;
    this.stepIndex.reset();
  }

  scaleModelInput(sample: Float32Array, _t: number, out?: Float32Array): Float32Array {
    return unscaledModelInput(sample, out);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: Float32Array, out?: Float32Array) {
    if (this.timesteps.length === 0) {
      throw new Error('DPMSolverMultistepScheduler: call setTimesteps before step');
    }
    checkSameLength(modelOutput, sample);
    const index = this.stepIndex.current(this.timesteps, t);
    const steps = this.timesteps.length;
    // improve numerical stability for small numbers of steps
    const lowerOrderFinal =
      index === steps - 1 &&
      (this.eulerAtFinal || (this.lowerOrderFinal && steps < 15) || this.finalSigmasType === 'zero');
    const lowerOrderSecond = index === steps - 2 && this.lowerOrderFinal && steps < 15;

    // the oldest x₀ drops out of the history; its buffer takes the new one
    const x0 = this.convertModelOutput(modelOutput, sample, index, this.modelOutputs.shift());
    this.modelOutputs.push(x0);

    // the SDE variants take the step's noise (drawn before `out`, which may be `sample`, is written)
    const z = this.takesNoise ? noiseFor(sample, noise) : undefined;
    const prevSample = outputFor(sample, out);
    if (this.solverOrder === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) {
      this.firstOrderUpdate(x0, sample, index, prevSample, z);
    } else if (this.solverOrder === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) {
      this.secondOrderUpdate(sample, index, prevSample, z);
    } else {
      this.thirdOrderUpdate(sample, index, prevSample);
    }
    if (this.lowerOrderNums < this.solverOrder) this.lowerOrderNums += 1;
    this.stepIndex.advance();
    return { prevSample };
  }

  /**
   * DPM-Solver++ integrates the data prediction x₀_θ(x_t, t), so every parameterisation becomes x₀;
   * DPM-Solver integrates the noise prediction ε_θ(x_t, t), so every one becomes ε.
   */
  private convertModelOutput(
    modelOutput: Float32Array,
    sample: Float32Array,
    index: number,
    buffer: Float32Array | undefined,
  ): Float32Array {
    const { alpha, sigma } = vpCoefficients(this.sigmas[index] as number);
    const type = this.predictionType;
    const out = reusable(buffer, sample.length, sample);
    if (this.dataPrediction && type === 'epsilon') return dpmDataFromEpsilon(sample, modelOutput, out, sigma, alpha);
    if (this.dataPrediction) {
      for (let i = 0; i < sample.length; i++) {
        const x = sample[i] as number;
        const m = modelOutput[i] as number;
        out[i] = type === 'epsilon' ? (x - sigma * m) / alpha : type === 'v_prediction' ? alpha * x - sigma * m : m;
      }
    } else {
      for (let i = 0; i < sample.length; i++) {
        const x = sample[i] as number;
        const m = modelOutput[i] as number;
        out[i] = type === 'epsilon' ? m : type === 'v_prediction' ? alpha * m + sigma * x : (x - alpha * m) / sigma;
      }
    }
    return out;
  }

  /**
   * First order (DDIM-equivalent), paper eq. 5: x_t = (σ_t/σ_s)·x_s − α_t(e^{−h} − 1)·x₀, or in
   * noise prediction x_t = (α_t/α_s)·x_s − σ_t(e^h − 1)·ε; the SDE variants add σ_t-scaled noise.
   */
  private firstOrderUpdate(
    m0: Float32Array,
    sample: Float32Array,
    index: number,
    out: Float32Array,
    noise: Float32Array | undefined,
  ): void {
    const t = vpCoefficients(this.sigmas[index + 1] as number);
    const s = vpCoefficients(this.sigmas[index] as number);
    const h = t.lambda - s.lambda;
    let sampleCoeff: number;
    let modelCoeff: number; // x_t = sampleCoeff·x_s + modelCoeff·m + noiseCoeff·z
    let noiseCoeff = 0;
    if (this.algorithm === 'dpmsolver++') {
      sampleCoeff = t.sigma / s.sigma;
      modelCoeff = -(t.alpha * (Math.exp(-h) - 1));
    } else if (this.algorithm === 'dpmsolver') {
      sampleCoeff = t.alpha / s.alpha;
      modelCoeff = -(t.sigma * (Math.exp(h) - 1));
    } else if (this.algorithm === 'sde-dpmsolver++') {
      sampleCoeff = (t.sigma / s.sigma) * Math.exp(-h);
      modelCoeff = t.alpha * (1 - Math.exp(-2 * h));
      noiseCoeff = t.sigma * Math.sqrt(1 - Math.exp(-2 * h));
    } else {
      sampleCoeff = t.alpha / s.alpha;
      modelCoeff = -2 * (t.sigma * (Math.exp(h) - 1));
      noiseCoeff = t.sigma * Math.sqrt(Math.exp(2 * h) - 1);
    }
    if (noise === undefined) {
      dpmUpdate(sample, m0, undefined, out, { sampleCoeff, d0Coeff: modelCoeff });
      return;
    }
    for (let i = 0; i < sample.length; i++) {
      const z = noiseCoeff * (noise[i] as number);
      out[i] = sampleCoeff * (sample[i] as number) + modelCoeff * (m0[i] as number) + z;
    }
  }

  /** Multistep second order, Algorithm 2 (2M): D₁ is the backward difference scaled by 1/r₀. */
  private secondOrderUpdate(
    sample: Float32Array,
    index: number,
    out: Float32Array,
    noise: Float32Array | undefined,
  ): void {
    const m0 = this.modelOutputs[this.solverOrder - 1];
    const m1 = this.modelOutputs[this.solverOrder - 2];
    if (m0 === undefined || m1 === undefined) throw new Error('DPMSolverMultistepScheduler: missing history');
    const t = vpCoefficients(this.sigmas[index + 1] as number);
    const s0 = vpCoefficients(this.sigmas[index] as number);
    const s1 = vpCoefficients(this.sigmas[index - 1] as number);
    const h = t.lambda - s0.lambda;
    const h0 = s0.lambda - s1.lambda;
    const r0 = h0 / h;
    // x_t = sampleCoeff·x_s + d0Coeff·D₀ + d1Coeff·D₁ + noiseCoeff·z, diffusers' formulas per algorithm
    let sampleCoeff: number;
    let d0Coeff: number;
    let d1Coeff: number;
    let noiseCoeff = 0;
    if (this.algorithm === 'dpmsolver++') {
      sampleCoeff = t.sigma / s0.sigma;
      const expTerm = t.alpha * (Math.exp(-h) - 1);
      d0Coeff = -expTerm;
      // midpoint: −½·α_t(e^{−h} − 1)·D₁; heun: +α_t((e^{−h} − 1)/h + 1)·D₁
      d1Coeff = this.heun ? t.alpha * ((Math.exp(-h) - 1) / h + 1) : -0.5 * expTerm;
    } else if (this.algorithm === 'dpmsolver') {
      sampleCoeff = t.alpha / s0.alpha;
      const expTerm = t.sigma * (Math.exp(h) - 1);
      d0Coeff = -expTerm;
      d1Coeff = this.heun ? -(t.sigma * ((Math.exp(h) - 1) / h - 1)) : -0.5 * expTerm;
    } else if (this.algorithm === 'sde-dpmsolver++') {
      sampleCoeff = (t.sigma / s0.sigma) * Math.exp(-h);
      const expTerm = t.alpha * (1 - Math.exp(-2 * h));
      d0Coeff = expTerm;
      d1Coeff = this.heun ? t.alpha * ((1 - Math.exp(-2 * h)) / (-2 * h) + 1) : 0.5 * expTerm;
      noiseCoeff = t.sigma * Math.sqrt(1 - Math.exp(-2 * h));
    } else {
      sampleCoeff = t.alpha / s0.alpha;
      const expTerm = t.sigma * (Math.exp(h) - 1);
      d0Coeff = -2 * expTerm;
      d1Coeff = this.heun ? -2 * (t.sigma * ((Math.exp(h) - 1) / h - 1)) : -expTerm;
      noiseCoeff = t.sigma * Math.sqrt(Math.exp(2 * h) - 1);
    }
    if (noise === undefined) {
      dpmUpdate(sample, m0, m1, out, { sampleCoeff, d0Coeff, d1Coeff, r0 });
      return;
    }
    for (let i = 0; i < sample.length; i++) {
      const d0 = m0[i] as number;
      const d1 = (1 / r0) * (d0 - (m1[i] as number));
      const z = noiseCoeff * (noise[i] as number);
      out[i] = sampleCoeff * (sample[i] as number) + d0Coeff * d0 + d1Coeff * d1 + z;
    }
  }

  /** Multistep third order (paper, Appendix), with two backward differences. */
  private thirdOrderUpdate(sample: Float32Array, index: number, out: Float32Array): void {
    const m0 = this.modelOutputs[this.solverOrder - 1];
    const m1 = this.modelOutputs[this.solverOrder - 2];
    const m2 = this.modelOutputs[this.solverOrder - 3];
    if (m0 === undefined || m1 === undefined || m2 === undefined) {
      throw new Error('DPMSolverMultistepScheduler: missing history');
    }
    const t = vpCoefficients(this.sigmas[index + 1] as number);
    const s0 = vpCoefficients(this.sigmas[index] as number);
    const s1 = vpCoefficients(this.sigmas[index - 1] as number);
    const s2 = vpCoefficients(this.sigmas[index - 2] as number);
    const h = t.lambda - s0.lambda;
    const h0 = s0.lambda - s1.lambda;
    const h1 = s1.lambda - s2.lambda;
    const r0 = h0 / h;
    const r1 = h1 / h;
    // x_t = sampleCoeff·x_s − c0·D₀ + c1·D₁ − c2·D₂
    let sampleCoeff: number;
    let c0: number;
    let c1: number;
    let c2: number;
    if (this.dataPrediction) {
      const em1 = Math.exp(-h) - 1;
      sampleCoeff = t.sigma / s0.sigma;
      c0 = t.alpha * em1;
      c1 = t.alpha * (em1 / h + 1);
      c2 = t.alpha * ((em1 + h) / (h * h) - 0.5);
    } else {
      const ep1 = Math.exp(h) - 1;
      sampleCoeff = t.alpha / s0.alpha;
      c0 = t.sigma * ep1;
      c1 = -(t.sigma * (ep1 / h - 1));
      c2 = t.sigma * ((ep1 - h) / (h * h) - 0.5);
    }
    for (let i = 0; i < sample.length; i++) {
      const d0 = m0[i] as number;
      const d10 = (1 / r0) * (d0 - (m1[i] as number));
      const d11 = (1 / r1) * ((m1[i] as number) - (m2[i] as number));
      const d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
      const d2 = (1 / (r0 + r1)) * (d10 - d11);
      out[i] = sampleCoeff * (sample[i] as number) - c0 * d0 + c1 * d1 - c2 * d2;
    }
  }
}
