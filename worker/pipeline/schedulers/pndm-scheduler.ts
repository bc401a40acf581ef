/**
 * Pseudo numerical methods for diffusion models (Liu et al. 2022, https://arxiv.org/abs/2202.09778),
 * a port of diffusers' `PNDMScheduler`. With `skip_prk_steps` (Stable Diffusion's setting) it is
 * crowsonkb's PLMS sampler: linear multistep on ε with a warm-up that repeats one timestep;
 * otherwise the first three steps are Runge–Kutta (PRK, 4 model calls each).
 */
import type { Scheduler, SchedulerConfig } from '../types.js';
import { DiscreteAlphas, predictedNoise } from './noise-schedule.js';
import { option, predictionType, type PredictionType } from './scheduler-config.js';
import { epsilonUpdate, plmsStep } from '../kernels/index.js';
import { checkSameLength, keepCopy, outputFor, reusable, unscaledModelInput } from './sample-buffers.js';
import { checkNumInferenceSteps, spacedTimesteps, spacingOptions, type SpacingOptions } from './timestep-schedule.js';

const PNDM_ORDER = 4;

export const PNDM_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  skip_prk_steps: false,
  set_alpha_to_one: false,
  prediction_type: 'epsilon',
  timestep_spacing: 'leading',
  steps_offset: 0,
} as const;

export class PndmScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  readonly takesNoise = false;
  readonly scalesModelInput = false;
  timesteps: number[] = [];

  private readonly alphas: DiscreteAlphas;
  private readonly skipPrkSteps: boolean;
  private readonly predictionType: PredictionType;
  private readonly spacing: SpacingOptions;

  private numInferenceSteps = 0;
  private prkTimesteps: number[] = [];
  /** Past model outputs e_θ for the multistep formula (copies), oldest first, at most four. */
  private ets: Float32Array[] = [];
  private counter = 0;
  /** x_t of the step the PRK stages or the PLMS warm-up refine (a copy). */
  private curSample: Float32Array | undefined;
  /** Running Runge–Kutta sum (1/6, 1/3, 1/3, 1/6) over one PRK step. */
  private curModelOutput: Float32Array | undefined;
  /** The ε combination the step uses (e′ of the paper), reused from step to step. */
  private epsPrime: Float32Array | undefined;

  constructor(config: SchedulerConfig) {
    this.alphas = new DiscreteAlphas('PNDMScheduler', config, PNDM_DEFAULTS);
    this.skipPrkSteps = option(config, 'skip_prk_steps', PNDM_DEFAULTS.skip_prk_steps);
    this.predictionType = predictionType(config);
    this.spacing = spacingOptions(config, PNDM_DEFAULTS);
  }

  setTimesteps(numInferenceSteps: number): void {
    const numTrainTimesteps = this.alphas.numTrainTimesteps;
    checkNumInferenceSteps(numInferenceSteps, numTrainTimesteps);
    this.numInferenceSteps = numInferenceSteps;
    // ascending, like diffusers' `_timesteps`
    const base = spacedTimesteps(this.spacing, numTrainTimesteps, numInferenceSteps, true).slice().reverse();
    let plms: number[];
    if (this.skipPrkSteps) {
      // PLMS warm-up: the second-to-last base timestep is visited twice
      this.prkTimesteps = [];
      plms = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      // each of the last PNDM_ORDER base timesteps, then its midpoint t + ratio/2, for RK4 stages
      const half = Math.floor(Math.floor(numTrainTimesteps / numInferenceSteps) / 2);
      const pairs = base.slice(-PNDM_ORDER).flatMap((t) => [t, t + half]);
      const doubled = pairs.slice(0, -1).flatMap((t) => [t, t]);
      this.prkTimesteps = doubled.slice(1, -1).reverse();
      plms = base.slice(0, -3).reverse();
    }
    this.timesteps = [...this.prkTimesteps, ...plms];
    this.ets = [];
    this.counter = 0;
    this.curSample = undefined;
  }

  scaleModelInput(sample: Float32Array, _t: number, out?: Float32Array): Float32Array {
    return unscaledModelInput(sample, out);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, _noise?: Float32Array, out?: Float32Array) {
    if (this.numInferenceSteps === 0) throw new Error('PNDMScheduler: call setTimesteps before step');
    checkSameLength(modelOutput, sample);
    const prevSample = outputFor(sample, out);
    if (this.counter < this.prkTimesteps.length && !this.skipPrkSteps) {
      this.stepPrk(modelOutput, t, sample, prevSample);
    } else {
      this.stepPlms(modelOutput, t, sample, prevSample);
    }
    this.counter += 1;
    return { prevSample };
  }

  /** Runge–Kutta stages: four model calls per step, combined as in RK4 (paper, eq. 13). */
  private stepPrk(modelOutput: Float32Array, t: number, sample: Float32Array, out: Float32Array): void {
    const ratio = Math.floor(this.alphas.numTrainTimesteps / this.numInferenceSteps);
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(ratio / 2);
    const prevTimestep = t - diffToPrev;
    const timestep = this.prkTimesteps[Math.floor(this.counter / 4) * 4] as number;

    const stage = this.counter % 4;
    const sum = (this.curModelOutput = reusable(this.curModelOutput, modelOutput.length));
    let output = modelOutput;
    if (stage === 0) {
      sum.fill(0);
      addScaled(sum, modelOutput, 1 / 6);
      this.pushEps(modelOutput);
      this.curSample = keepCopy(this.curSample, sample);
    } else if (stage === 1 || stage === 2) {
      addScaled(sum, modelOutput, 1 / 3);
    } else {
      output = this.epsPrimeBuffer(modelOutput);
      for (let i = 0; i < output.length; i++) output[i] = (sum[i] as number) + (1 / 6) * (modelOutput[i] as number);
    }
    this.prevSample(this.curSample ?? sample, timestep, prevTimestep, output, out);
  }

  /** Linear multistep (Adams–Bashforth) on ε (paper, eq. 12), with PLMS's warm-up steps. */
  private stepPlms(modelOutput: Float32Array, t: number, sample: Float32Array, out: Float32Array): void {
    if (!this.skipPrkSteps && this.ets.length < 3) {
      throw new Error('PNDMScheduler: PLMS needs three Runge–Kutta steps first');
    }
    const ratio = Math.floor(this.alphas.numTrainTimesteps / this.numInferenceSteps);
    let timestep = t;
    let prevTimestep = t - ratio;
    const e = this.ets;
    if (this.counter !== 1 && e.length >= 1 && this.predictionType === 'epsilon') {
      // Adams–Bashforth of order 2–4 and formula (9) in one pass; ε joins the history.
      const slot = this.nextEpsSlot(modelOutput);
      slot.set(modelOutput);
      const { sampleCoeff, epsCoeff } = this.coefficients(timestep, prevTimestep);
      plmsStep([slot, ...e.slice().reverse()], sample, out, sampleCoeff, epsCoeff);
      e.push(slot);
      return;
    }
    if (this.counter !== 1) {
      this.pushEps(modelOutput);
    } else {
      // warm-up: the repeated timestep redoes the first step with the averaged ε
      prevTimestep = t;
      timestep = t + ratio;
    }

    const n = e.length;
    let output: Float32Array = this.epsPrimeBuffer(modelOutput);
    let from = sample;
    // Each combination is its own small loop function, so V8 optimizes each on its own instead
    // of re-optimizing one large function whose branches each run once per image.
    if (n === 1 && this.counter === 0) {
      output = modelOutput;
      this.curSample = keepCopy(this.curSample, sample);
    } else if (n === 1 && this.counter === 1) {
      plmsWarmup(output, modelOutput, e[0] as Float32Array);
      from = this.curSample ?? sample;
      this.curSample = undefined;
    } else if (n === 2) {
      plms2(output, e[1] as Float32Array, e[0] as Float32Array);
    } else if (n === 3) {
      plms3(output, e[2] as Float32Array, e[1] as Float32Array, e[0] as Float32Array);
    } else {
      plms4(output, e[3] as Float32Array, e[2] as Float32Array, e[1] as Float32Array, e[0] as Float32Array);
    }
    this.prevSample(from, timestep, prevTimestep, output, out);
  }

  /** √(α_{t−δ}/α_t) and the ε coefficient of formula (9). */
  private coefficients(timestep: number, prevTimestep: number): { sampleCoeff: number; epsCoeff: number } {
    const alphaProdT = this.alphas.at(timestep);
    const alphaProdTPrev = this.alphas.atPrev(prevTimestep);
    const betaProdT = 1 - alphaProdT;
    const betaProdTPrev = 1 - alphaProdTPrev;

    // (α_{t−δ} − α_t) / (√α_t (√α_{t−δ} + √α_t)) + 1 = √(α_{t−δ} / α_t)
    const sampleCoeff = Math.sqrt(alphaProdTPrev / alphaProdT);
    // denominator of e_θ(x_t, t) in formula (9)
    const modelOutputDenomCoeff =
      alphaProdT * Math.sqrt(betaProdTPrev) + Math.sqrt(alphaProdT * betaProdT * alphaProdTPrev);
    const epsCoeff = (alphaProdTPrev - alphaProdT) / modelOutputDenomCoeff;
    return { sampleCoeff, epsCoeff };
  }

  /** x_{t−δ} from x_t and ε (paper, formula 9), into `out`. */
  private prevSample(
    sample: Float32Array,
    timestep: number,
    prevTimestep: number,
    modelOutput: Float32Array,
    out: Float32Array,
  ): void {
    const { sampleCoeff, epsCoeff } = this.coefficients(timestep, prevTimestep);
    const alphaProdT = this.alphas.at(timestep);
    const betaProdT = 1 - alphaProdT;

    const type = this.predictionType;
    if (type === 'epsilon') {
      epsilonUpdate(sample, modelOutput, out, sampleCoeff, epsCoeff);
      return;
    }
    const sqrtAlpha = Math.sqrt(alphaProdT);
    const sqrtBeta = Math.sqrt(betaProdT);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i] as number;
      // formula (9) is written for ε; v (Salimans & Ho 2022) and x₀ are converted to it
      const eps = predictedNoise(type, x, modelOutput[i] as number, sqrtAlpha, sqrtBeta);
      out[i] = sampleCoeff * x - epsCoeff * eps;
    }
  }

  /** Keeps a copy of ε: the oldest of four is no longer needed and its buffer is reused. */
  private pushEps(modelOutput: Float32Array): void {
    const oldest = this.ets.length === PNDM_ORDER ? this.ets.shift() : undefined;
    this.ets.push(keepCopy(oldest, modelOutput));
  }

  /**
   * A buffer for the next ε copy, not yet in the history: the oldest of four's when it is
   * dropped (no longer read), else a new one.
   */
  private nextEpsSlot(like: Float32Array): Float32Array {
    const oldest = this.ets.length === PNDM_ORDER ? this.ets.shift() : undefined;
    return reusable(oldest, like.length, like);
  }

  private epsPrimeBuffer(like: Float32Array): Float32Array {
    return (this.epsPrime = reusable(this.epsPrime, like.length, like));
  }
}

function addScaled(acc: Float32Array, values: Float32Array, scale: number): void {
  for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + scale * (values[i] as number);
}

/** PLMS warm-up: (ε + e₁) / 2. */
function plmsWarmup(out: Float32Array, modelOutput: Float32Array, e1: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = ((modelOutput[i] as number) + (e1[i] as number)) / 2;
}

/** Second-order Adams–Bashforth: (3e₁ − e₂) / 2 (e₁ the newest). */
function plms2(out: Float32Array, e1: Float32Array, e2: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = (3 * (e1[i] as number) - (e2[i] as number)) / 2;
}

/** Third order: (23e₁ − 16e₂ + 5e₃) / 12. */
function plms3(out: Float32Array, e1: Float32Array, e2: Float32Array, e3: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) {
    out[i] = (23 * (e1[i] as number) - 16 * (e2[i] as number) + 5 * (e3[i] as number)) / 12;
  }
}

/** Fourth order: (55e₁ − 59e₂ + 37e₃ − 9e₄) / 24. */
function plms4(out: Float32Array, e1: Float32Array, e2: Float32Array, e3: Float32Array, e4: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) {
    out[i] =
      (1 / 24) * (55 * (e1[i] as number) - 59 * (e2[i] as number) + 37 * (e3[i] as number) - 9 * (e4[i] as number));
  }
}
