/**
 * Pseudo numerical methods for diffusion models (Liu et al. 2022, https://arxiv.org/abs/2202.09778),
 * a port of diffusers' `PNDMScheduler`. With `skip_prk_steps` (Stable Diffusion's setting) it is
 * crowsonkb's PLMS sampler: linear multistep on ε with a warm-up that repeats one timestep;
 * otherwise the first three steps are Runge–Kutta (PRK, 4 model calls each).
 */
import type { Scheduler, SchedulerConfig } from '../types.js';
import { makeAlphasCumprod, noiseScheduleOptions } from './noise-schedule.js';
import {
  checkSameLength,
  option,
  predictionType,
  type PredictionType,
} from './scheduler-config.js';
import {
  checkNumInferenceSteps,
  checkSpacing,
  spacedTimesteps,
  type TimestepSpacing,
} from './timestep-schedule.js';

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
  timesteps: number[] = [];

  private readonly alphasCumprod: Float32Array;
  /** ᾱ used past the end of the schedule (t < 0). */
  private readonly finalAlphaCumprod: number;
  private readonly numTrainTimesteps: number;
  private readonly skipPrkSteps: boolean;
  private readonly predictionType: PredictionType;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;

  private numInferenceSteps = 0;
  private prkTimesteps: number[] = [];
  /** Past model outputs e_θ for the multistep formula. */
  private ets: Float32Array[] = [];
  private counter = 0;
  private curSample: Float32Array | undefined;
  /** Running Runge–Kutta sum (1/6, 1/3, 1/3, 1/6) over one PRK step. */
  private curModelOutput: Float32Array | undefined;

  constructor(config: SchedulerConfig) {
    const schedule = noiseScheduleOptions(
      config,
      { betaStart: PNDM_DEFAULTS.beta_start, betaEnd: PNDM_DEFAULTS.beta_end, betaSchedule: PNDM_DEFAULTS.beta_schedule },
      false,
    );
    this.numTrainTimesteps = schedule.numTrainTimesteps;
    this.alphasCumprod = makeAlphasCumprod(schedule);
    this.finalAlphaCumprod = option(config, 'set_alpha_to_one', PNDM_DEFAULTS.set_alpha_to_one)
      ? 1
      : (this.alphasCumprod[0] as number);
    this.skipPrkSteps = option(config, 'skip_prk_steps', PNDM_DEFAULTS.skip_prk_steps);
    this.predictionType = predictionType(config);
    this.spacing = checkSpacing(option(config, 'timestep_spacing', PNDM_DEFAULTS.timestep_spacing));
    this.stepsOffset = option(config, 'steps_offset', PNDM_DEFAULTS.steps_offset);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(numInferenceSteps, this.numTrainTimesteps);
    this.numInferenceSteps = numInferenceSteps;
    // ascending, like diffusers' `_timesteps`
    const base = spacedTimesteps(this.spacing, this.numTrainTimesteps, numInferenceSteps, this.stepsOffset, true)
      .slice()
      .reverse();
    let plms: number[];
    if (this.skipPrkSteps) {
      // PLMS warm-up: the second-to-last base timestep is visited twice
      this.prkTimesteps = [];
      plms = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      // each of the last PNDM_ORDER base timesteps, then its midpoint t + ratio/2, for RK4 stages
      const half = Math.floor(Math.floor(this.numTrainTimesteps / numInferenceSteps) / 2);
      const pairs = base.slice(-PNDM_ORDER).flatMap((t) => [t, t + half]);
      const doubled = pairs.slice(0, -1).flatMap((t) => [t, t]);
      this.prkTimesteps = doubled.slice(1, -1).reverse();
      plms = base.slice(0, -3).reverse();
    }
    this.timesteps = [...this.prkTimesteps, ...plms];
    this.ets = [];
    this.counter = 0;
    this.curSample = undefined;
    this.curModelOutput = undefined;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): { prevSample: Float32Array } {
    if (this.numInferenceSteps === 0) throw new Error('PNDMScheduler: call setTimesteps before step');
    checkSameLength(modelOutput, sample);
    const prevSample =
      this.counter < this.prkTimesteps.length && !this.skipPrkSteps
        ? this.stepPrk(modelOutput, t, sample)
        : this.stepPlms(modelOutput, t, sample);
    this.counter += 1;
    return { prevSample };
  }

  /** Runge–Kutta stages: four model calls per step, combined as in RK4 (paper, eq. 13). */
  private stepPrk(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    const ratio = Math.floor(this.numTrainTimesteps / this.numInferenceSteps);
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(ratio / 2);
    const prevTimestep = t - diffToPrev;
    const timestep = this.prkTimesteps[Math.floor(this.counter / 4) * 4] as number;

    const stage = this.counter % 4;
    const acc = this.curModelOutput ?? new Float32Array(modelOutput.length);
    let output = modelOutput;
    if (stage === 0) {
      addScaled(acc, modelOutput, 1 / 6);
      this.ets.push(modelOutput);
      this.curSample = sample;
    } else if (stage === 1 || stage === 2) {
      addScaled(acc, modelOutput, 1 / 3);
    } else {
      output = acc.map((v, i) => v + (1 / 6) * (modelOutput[i] as number));
    }
    this.curModelOutput = stage === 3 ? undefined : acc;

    const curSample = this.curSample ?? sample;
    return this.prevSample(curSample, timestep, prevTimestep, output);
  }

  /** Linear multistep (Adams–Bashforth) on ε (paper, eq. 12), with PLMS's warm-up steps. */
  private stepPlms(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (!this.skipPrkSteps && this.ets.length < 3) {
      throw new Error('PNDMScheduler: PLMS needs three Runge–Kutta steps first');
    }
    const ratio = Math.floor(this.numTrainTimesteps / this.numInferenceSteps);
    let timestep = t;
    let prevTimestep = t - ratio;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput);
    } else {
      // warm-up: the repeated timestep redoes the first step with the averaged ε
      prevTimestep = t;
      timestep = t + ratio;
    }

    const e = this.ets;
    const n = e.length;
    let output: Float32Array;
    let from = sample;
    if (n === 1 && this.counter === 0) {
      output = modelOutput;
      this.curSample = sample;
    } else if (n === 1 && this.counter === 1) {
      const e1 = e[0] as Float32Array;
      output = modelOutput.map((v, i) => (v + (e1[i] as number)) / 2);
      from = this.curSample ?? sample;
      this.curSample = undefined;
    } else if (n === 2) {
      const [e2, e1] = e as [Float32Array, Float32Array];
      output = e1.map((v, i) => (3 * v - (e2[i] as number)) / 2);
    } else if (n === 3) {
      const [e3, e2, e1] = e as [Float32Array, Float32Array, Float32Array];
      output = e1.map((v, i) => (23 * v - 16 * (e2[i] as number) + 5 * (e3[i] as number)) / 12);
    } else {
      const [e4, e3, e2, e1] = e.slice(-4) as [Float32Array, Float32Array, Float32Array, Float32Array];
      output = e1.map(
        (v, i) => (1 / 24) * (55 * v - 59 * (e2[i] as number) + 37 * (e3[i] as number) - 9 * (e4[i] as number)),
      );
    }
    return this.prevSample(from, timestep, prevTimestep, output);
  }

  /** x_{t−δ} from x_t and ε (paper, formula 9). */
  private prevSample(sample: Float32Array, timestep: number, prevTimestep: number, modelOutput: Float32Array): Float32Array {
    const alphaProdT = this.alphaCumprodAt(timestep);
    const alphaProdTPrev = prevTimestep >= 0 ? this.alphaCumprodAt(prevTimestep) : this.finalAlphaCumprod;
    const betaProdT = 1 - alphaProdT;
    const betaProdTPrev = 1 - alphaProdTPrev;

    // (α_{t−δ} − α_t) / (√α_t (√α_{t−δ} + √α_t)) + 1 = √(α_{t−δ} / α_t)
    const sampleCoeff = Math.sqrt(alphaProdTPrev / alphaProdT);
    // denominator of e_θ(x_t, t) in formula (9)
    const modelOutputDenomCoeff =
      alphaProdT * Math.sqrt(betaProdTPrev) + Math.sqrt(alphaProdT * betaProdT * alphaProdTPrev);
    const epsCoeff = (alphaProdTPrev - alphaProdT) / modelOutputDenomCoeff;

    const out = new Float32Array(sample.length);
    const sqrtAlpha = Math.sqrt(alphaProdT);
    const sqrtBeta = Math.sqrt(betaProdT);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i] as number;
      const m = modelOutput[i] as number;
      // formula (9) is written for ε; v (Salimans & Ho 2022) and x₀ are converted to it
      const eps =
        this.predictionType === 'epsilon'
          ? m
          : this.predictionType === 'v_prediction'
            ? sqrtAlpha * m + sqrtBeta * x
            : (x - sqrtAlpha * m) / sqrtBeta;
      out[i] = sampleCoeff * x - epsCoeff * eps;
    }
    return out;
  }

  private alphaCumprodAt(t: number): number {
    const value = this.alphasCumprod[t];
    if (!Number.isInteger(t) || value === undefined) {
      throw new RangeError(`PNDMScheduler: timestep ${t} is outside 0…${this.numTrainTimesteps - 1}`);
    }
    return value;
  }
}

function addScaled(acc: Float32Array, values: Float32Array, scale: number): void {
  for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + scale * (values[i] as number);
}
