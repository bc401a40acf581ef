/**
 * Pieces shared by the σ-parameterised (k-diffusion style, Karras et al. 2022) schedulers:
 * x_σ = x₀ + σ·ε, with the model fed c_in·x_σ = x_σ / √(σ² + 1).
 */
import { interp } from './numpy-like.js';
import { indexForTimestep } from './timestep-schedule.js';

/** σ at each (possibly fractional) timestep by linear interpolation over the training sigmas. */
export function interpolatedSigmas(timesteps: readonly number[], trainingSigmas: Float32Array): number[] {
  const grid = Array.from({ length: trainingSigmas.length }, (_, i) => i);
  return timesteps.map((t) => interp(t, grid, trainingSigmas));
}

/**
 * Standard deviation of the initial noise: σ_max, or √(σ_max² + 1) for "leading" spacing, whose
 * first timestep is not the last training one (diffusers' `init_noise_sigma`, in float32).
 */
export function initNoiseSigmaFor(sigmas: Float32Array, spacing: string): number {
  let maxSigma = 0;
  for (const s of sigmas) if (s > maxSigma) maxSigma = s;
  if (spacing === 'linspace' || spacing === 'trailing') return maxSigma;
  const f = Math.fround;
  return f(Math.sqrt(f(f(maxSigma * maxSigma) + 1)));
}

/** x / √(σ² + 1), the Euler input scaling, with diffusers' float32 arithmetic. */
export function scaleBySigma(sample: Float32Array, sigma: number): Float32Array {
  const f = Math.fround;
  const denom = f(Math.sqrt(f(f(sigma * sigma) + 1)));
  return sample.map((x) => x / denom);
}

/**
 * diffusers' `_step_index`: found from the first timestep the loop passes (to either
 * `scale_model_input` or `step`), then counted up by each `step`; `reset` on `set_timesteps`.
 */
export class StepIndex {
  private index: number | undefined;

  constructor(private readonly missing: 'throw' | 'last') {}

  reset(): void {
    this.index = undefined;
  }

  current(timesteps: readonly number[], t: number): number {
    this.index ??= indexForTimestep(timesteps, t, this.missing);
    return this.index;
  }

  advance(): void {
    if (this.index !== undefined) this.index += 1;
  }
}
