/**
 * Choosing the inference timesteps and their noise levels σ_t = √((1 − ᾱ_t)/ᾱ_t), as diffusers'
 * `set_timesteps` methods do.
 */
import type { SchedulerConfig } from '../types.js';
import { arange, linspace, roundHalfEven } from './numpy-like.js';
import { option, SchedulerConfigError } from './scheduler-config.js';

/** Table 2 of Lin et al. 2023 (https://arxiv.org/abs/2305.08891). */
export type TimestepSpacing = 'linspace' | 'leading' | 'trailing';
export const TIMESTEP_SPACINGS: readonly TimestepSpacing[] = ['linspace', 'leading', 'trailing'];

/** `timestep_spacing` and `steps_offset` of a scheduler config. */
export interface SpacingOptions {
  spacing: TimestepSpacing;
  stepsOffset: number;
}

/** Reads the spacing keys with a scheduler class's defaults; throws for an unknown spacing. */
export function spacingOptions(
  config: SchedulerConfig,
  defaults: { timestep_spacing: string; steps_offset: number },
): SpacingOptions {
  return {
    spacing: checkSpacing(option(config, 'timestep_spacing', defaults.timestep_spacing)),
    stepsOffset: option(config, 'steps_offset', defaults.steps_offset),
  };
}

/**
 * The `numInferenceSteps` timesteps of DDIM, PNDM and the Euler schedulers, from noisiest to
 * cleanest. `roundLinspace` is false for Euler, which keeps linspace's fractional values.
 */
export function spacedTimesteps(
  { spacing, stepsOffset }: SpacingOptions,
  numTrainTimesteps: number,
  numInferenceSteps: number,
  roundLinspace: boolean,
): number[] {
  switch (spacing) {
    case 'linspace': {
      const steps = linspace(0, numTrainTimesteps - 1, numInferenceSteps);
      return (roundLinspace ? steps.map(roundHalfEven) : steps).reverse();
    }
    case 'leading': {
      // integer timesteps: multiples of the step ratio, shifted by steps_offset
      const stepRatio = Math.floor(numTrainTimesteps / numInferenceSteps);
      const steps: number[] = [];
      for (let i = numInferenceSteps - 1; i >= 0; i--) steps.push(i * stepRatio + stepsOffset);
      return steps;
    }
    case 'trailing': {
      // counted down from the last training timestep with a fractional ratio
      const stepRatio = numTrainTimesteps / numInferenceSteps;
      return arange(numTrainTimesteps, 0, -stepRatio).map((t) => roundHalfEven(t) - 1);
    }
  }
}

/** σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training timestep, in float32 like diffusers' torch expression. */
export function trainingSigmas(alphasCumprod: Float32Array): Float32Array {
  const f = Math.fround;
  return alphasCumprod.map((a) => Math.sqrt(f(f(1 - a) / a)));
}

/**
 * Karras et al. 2022 ("Elucidating the Design Space…"), eq. 5:
 * σ_i = (σ_max^{1/ρ} + i/(n−1) · (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ with ρ = 7.
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, numInferenceSteps: number, rho = 7): number[] {
  const ramp = linspace(0, 1, numInferenceSteps);
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInvRho + r * (minInvRho - maxInvRho)) ** rho);
}

/** log σ_t per training timestep (float32, `np.log` of a float32 array). */
export function logSigmas(sigmas: Float32Array): Float32Array {
  return sigmas.map((s) => Math.log(s));
}

/**
 * The fractional training timestep whose σ is `sigma`, interpolating linearly in log σ between
 * the two neighbouring training sigmas (diffusers' `_sigma_to_t`).
 */
export function sigmaToT(sigma: number, logSigmasByT: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // low_idx = argmax(cumsum(log σ − log σ_i ≥ 0)): the last index at or below log σ, else 0
  let lowIdx = 0;
  for (let i = 0; i < logSigmasByT.length; i++) {
    if (logSigma - (logSigmasByT[i] as number) >= 0) lowIdx = i;
  }
  lowIdx = Math.min(lowIdx, logSigmasByT.length - 2);
  const highIdx = lowIdx + 1;
  const low = logSigmasByT[lowIdx] as number;
  const high = logSigmasByT[highIdx] as number;
  // interpolate sigmas, then transform the interpolation weight to the time range; low − high
  // is a difference of two float32 log σ, which numpy evaluates in float32 (low − log σ is float64)
  const w = Math.min(Math.max((low - logSigma) / Math.fround(low - high), 0), 1);
  return (1 - w) * lowIdx + w * highIdx;
}

/**
 * diffusers' `index_for_timestep`: the position of `t` in `timesteps`. When `t` appears twice the
 * second position is taken, so a run started mid-schedule (img2img) does not skip a sigma.
 */
export function indexForTimestep(timesteps: readonly number[], t: number, missing: 'throw' | 'last'): number {
  const found: number[] = [];
  for (let i = 0; i < timesteps.length && found.length < 2; i++) if (timesteps[i] === t) found.push(i);
  if (found.length === 0) {
    if (missing === 'last') return timesteps.length - 1;
    throw new SchedulerConfigError('timestep', `timestep ${t} is not one of this run's timesteps`);
  }
  return (found.length > 1 ? found[1] : found[0]) as number;
}

export function checkNumInferenceSteps(numInferenceSteps: number, numTrainTimesteps: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > numTrainTimesteps) {
    throw new SchedulerConfigError(
      'num_inference_steps',
      `num_inference_steps must be an integer from 1 to ${numTrainTimesteps}, got ${numInferenceSteps}`,
    );
  }
}

/** Throws unless `spacing` is one diffusers knows. */
export function checkSpacing(spacing: string): TimestepSpacing {
  if (!(TIMESTEP_SPACINGS as readonly string[]).includes(spacing)) {
    throw new SchedulerConfigError(
      'timestep_spacing',
      `timestep_spacing "${spacing}" is not supported; use linspace, leading or trailing`,
    );
  }
  return spacing as TimestepSpacing;
}
