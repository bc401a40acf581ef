/**
 * The forward-process noise schedule shared by all schedulers: betas from `beta_schedule`, then
 * ᾱ_t = Π (1 − β_s) (DDPM, Ho et al. 2020, eq. 4). diffusers keeps both as float32 torch
 * tensors, so they are Float32Arrays here too.
 */
import type { SchedulerConfig } from '../types.js';
import { cumprodFloat32, torchLinspaceFloat32 } from './numpy-like.js';
import {
  numTrainTimesteps,
  option,
  optionalNumberList,
  SchedulerConfigError,
  type PredictionType,
} from './scheduler-config.js';

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';

export interface NoiseScheduleOptions {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: string;
  trainedBetas?: number[] | undefined;
  rescaleBetasZeroSnr?: boolean;
}

/**
 * Glide's cosine schedule (Nichol & Dhariwal 2021, eq. 17): β_t = 1 − ᾱ(t+1)/ᾱ(t), capped at
 * `maxBeta`; diffusers' `betas_for_alpha_bar` computes it in float64 and stores float32.
 */
export function betasForAlphaBar(numDiffusionTimesteps: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  const betas = new Float32Array(numDiffusionTimesteps);
  for (let i = 0; i < numDiffusionTimesteps; i++) {
    const t1 = i / numDiffusionTimesteps;
    const t2 = (i + 1) / numDiffusionTimesteps;
    betas[i] = Math.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta);
  }
  return betas;
}

/**
 * Rescales betas to a zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules and
 * Sample Steps are Flawed", Algorithm 1), in float32 like diffusers' `rescale_zero_terminal_snr`.
 */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const f = Math.fround;
  const alphas = betas.map((b) => f(1 - b));
  const alphasCumprod = cumprodFloat32(alphas);
  const alphasBarSqrt = alphasCumprod.map((a) => f(Math.sqrt(a)));
  // store old values
  const sqrt0 = alphasBarSqrt[0] as number;
  const sqrtT = alphasBarSqrt[alphasBarSqrt.length - 1] as number;
  const scale = f(sqrt0 / f(sqrt0 - sqrtT));
  const out = new Float32Array(betas.length);
  let previousBar = 0;
  for (let i = 0; i < alphasBarSqrt.length; i++) {
    // shift so the last timestep is zero, then scale so the first is back to its old value
    const shifted = f(f((alphasBarSqrt[i] as number) - sqrtT) * scale);
    const bar = f(shifted * shifted);
    // revert the cumprod: α_t = ᾱ_t / ᾱ_{t−1}
    const alpha = i === 0 ? bar : f(bar / previousBar);
    out[i] = f(1 - alpha);
    previousBar = bar;
  }
  return out;
}

/** β_1 … β_T as diffusers builds them in `__init__`. */
export function makeBetas(options: NoiseScheduleOptions): Float32Array {
  const { numTrainTimesteps, betaStart, betaEnd, betaSchedule, trainedBetas } = options;
  let betas: Float32Array;
  if (trainedBetas !== undefined) {
    betas = Float32Array.from(trainedBetas);
  } else if (betaSchedule === 'linear') {
    betas = torchLinspaceFloat32(betaStart, betaEnd, numTrainTimesteps);
  } else if (betaSchedule === 'scaled_linear') {
    // this schedule is very specific to the latent diffusion model
    betas = torchLinspaceFloat32(betaStart ** 0.5, betaEnd ** 0.5, numTrainTimesteps).map((b) => b * b);
  } else if (betaSchedule === 'squaredcos_cap_v2') {
    betas = betasForAlphaBar(numTrainTimesteps);
  } else {
    throw new SchedulerConfigError(
      'beta_schedule',
      `beta_schedule "${betaSchedule}" is not supported; use linear, scaled_linear or squaredcos_cap_v2`,
    );
  }
  return options.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betas) : betas;
}

/** ᾱ_t = Π_{s≤t} (1 − β_s), float32 like `torch.cumprod(1.0 - betas)`. */
export function makeAlphasCumprod(options: NoiseScheduleOptions): Float32Array {
  const alphas = makeBetas(options).map((b) => 1 - b);
  return cumprodFloat32(alphas);
}

/** A scheduler class's diffusers defaults (its `*_DEFAULTS`) for the noise-schedule keys. */
export interface NoiseScheduleDefaults {
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  rescale_betas_zero_snr?: boolean;
}

/**
 * The noise-schedule keys every scheduler takes, with that scheduler's defaults. Like diffusers,
 * a class without `rescale_betas_zero_snr` among its defaults (PNDM) ignores the key.
 */
export function noiseScheduleOptions(config: SchedulerConfig, defaults: NoiseScheduleDefaults): NoiseScheduleOptions {
  const rescale = defaults.rescale_betas_zero_snr !== undefined;
  return {
    numTrainTimesteps: numTrainTimesteps(config),
    betaStart: option(config, 'beta_start', defaults.beta_start),
    betaEnd: option(config, 'beta_end', defaults.beta_end),
    betaSchedule: option(config, 'beta_schedule', defaults.beta_schedule),
    trainedBetas: optionalNumberList(config, 'trained_betas'),
    rescaleBetasZeroSnr: rescale ? option(config, 'rescale_betas_zero_snr', defaults.rescale_betas_zero_snr ?? false) : false,
  };
}

/**
 * ᾱ for the σ-parameterised schedulers (Euler, Euler ancestral, DPM-Solver), with diffusers' fix
 * for a zero terminal SNR: ᾱ_T = 2⁻²⁴, so σ_T = √((1 − ᾱ_T)/ᾱ_T) stays finite (≈ 4096).
 */
export function kDiffusionAlphasCumprod(config: SchedulerConfig, defaults: NoiseScheduleDefaults): Float32Array {
  const schedule = noiseScheduleOptions(config, defaults);
  const alphasCumprod = makeAlphasCumprod(schedule);
  if (schedule.rescaleBetasZeroSnr) alphasCumprod[alphasCumprod.length - 1] = 2 ** -24;
  return alphasCumprod;
}

/**
 * ᾱ by training timestep for the schedulers that step between integer timesteps (DDIM, PNDM,
 * LCM). Their last step looks at the ᾱ "before" t = 0, which does not exist: it is 1 with
 * `set_alpha_to_one`, else ᾱ_0.
 */
export class DiscreteAlphas {
  readonly numTrainTimesteps: number;
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;

  constructor(
    private readonly className: string,
    config: SchedulerConfig,
    defaults: NoiseScheduleDefaults & { set_alpha_to_one: boolean },
  ) {
    const schedule = noiseScheduleOptions(config, defaults);
    this.numTrainTimesteps = schedule.numTrainTimesteps;
    this.alphasCumprod = makeAlphasCumprod(schedule);
    this.finalAlphaCumprod = option(config, 'set_alpha_to_one', defaults.set_alpha_to_one)
      ? 1
      : (this.alphasCumprod[0] as number);
  }

  /** ᾱ_t of a training timestep. */
  at(t: number): number {
    const value = this.alphasCumprod[t];
    if (!Number.isInteger(t) || value === undefined) {
      throw new RangeError(`${this.className}: timestep ${t} is outside 0…${this.numTrainTimesteps - 1}`);
    }
    return value;
  }

  /** ᾱ of the timestep a step goes to: past t = 0 (a negative timestep), the final ᾱ. */
  atPrev(prevTimestep: number): number {
    return prevTimestep >= 0 ? this.at(prevTimestep) : this.finalAlphaCumprod;
  }
}

/*
 * The model output m at x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (DDPM, eq. 4) is ε, x₀, or
 * v = √ᾱ_t·ε − √(1 − ᾱ_t)·x₀ (Salimans & Ho 2022); these give x₀ and ε back from any of them.
 * `sqrtAlpha` = √ᾱ_t, `sqrtBeta` = √(1 − ᾱ_t).
 */

/** The "predicted x₀" of the DDIM update (Song et al. 2020, eq. 12). */
export function predictedOriginalSample(
  type: PredictionType,
  x: number,
  m: number,
  sqrtAlpha: number,
  sqrtBeta: number,
): number {
  if (type === 'epsilon') return (x - sqrtBeta * m) / sqrtAlpha;
  if (type === 'v_prediction') return sqrtAlpha * x - sqrtBeta * m;
  return m;
}

/** The noise ε in x_t. */
export function predictedNoise(type: PredictionType, x: number, m: number, sqrtAlpha: number, sqrtBeta: number): number {
  if (type === 'epsilon') return m;
  if (type === 'v_prediction') return sqrtAlpha * m + sqrtBeta * x;
  return (x - sqrtAlpha * m) / sqrtBeta;
}
