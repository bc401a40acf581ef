/**
 * Reading `scheduler_config.json` values (snake_case, as diffusers writes them) with each
 * scheduler's own defaults, and the errors a bad name or value raises.
 */
import type { SchedulerConfig } from '../types.js';

/** What the model predicts: noise ε, velocity v (Salimans & Ho 2022) or the clean sample x₀. */
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';

/** A scheduler name or alias that is not supported; the API answers it as bad input. */
export class UnknownSchedulerError extends Error {
  readonly code = 'unknown_scheduler';
  readonly retryable = false;

  constructor(
    readonly schedulerName: string,
    supported: readonly string[],
  ) {
    super(`Unknown scheduler "${schedulerName}"; supported: ${supported.join(', ')}`);
    this.name = 'UnknownSchedulerError';
  }
}

/** A scheduler config value that is malformed or asks for a code path that is not implemented. */
export class SchedulerConfigError extends Error {
  readonly code = 'invalid_scheduler_config';
  readonly retryable = false;

  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
    this.name = 'SchedulerConfigError';
  }
}

type Scalar = number | string | boolean;
type Widen<T> = T extends number ? number : T extends string ? string : T extends boolean ? boolean : never;

/**
 * `config[key]`, or `fallback` when absent or null (diffusers' keyword default), checked to have
 * the fallback's type.
 */
export function option<T extends Scalar>(config: SchedulerConfig, key: string, fallback: T): Widen<T> {
  const value = config[key];
  if (value === undefined || value === null) return fallback as unknown as Widen<T>;
  if (typeof value !== typeof fallback) {
    throw new SchedulerConfigError(key, `${key} must be a ${typeof fallback}, got ${JSON.stringify(value)}`);
  }
  return value as unknown as Widen<T>;
}

/** An optional number (`Optional[float] = None` in diffusers). */
export function optionalNumber(config: SchedulerConfig, key: string): number | undefined {
  const value = config[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number') {
    throw new SchedulerConfigError(key, `${key} must be a number, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** An optional list of numbers, such as `trained_betas`. */
export function optionalNumberList(config: SchedulerConfig, key: string): number[] | undefined {
  const value = config[key];
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || !value.every((v): v is number => typeof v === 'number')) {
    throw new SchedulerConfigError(key, `${key} must be a list of numbers`);
  }
  return value;
}

/** One of `allowed`, or `fallback`. */
export function choice<T extends string>(
  config: SchedulerConfig,
  key: string,
  allowed: readonly T[],
  fallback: T,
): T {
  const value = option(config, key, fallback as string);
  const index = (allowed as readonly string[]).indexOf(value);
  if (index < 0) {
    throw new SchedulerConfigError(key, `${key} "${value}" is not supported; use one of ${allowed.join(', ')}`);
  }
  // the literal itself, not the config's copy: step loops compare it per element, and literals
  // compare by identity
  return allowed[index] as T;
}

/** Throws when a flag selects a code path this port does not implement (rather than ignoring it). */
export function rejectEnabled(config: SchedulerConfig, keys: readonly string[], className: string): void {
  for (const key of keys) {
    const value = config[key];
    if (value !== undefined && value !== null && value !== false) {
      throw new SchedulerConfigError(key, `${className}: ${key}=${JSON.stringify(value)} is not supported`);
    }
  }
}

export function predictionType(config: SchedulerConfig): PredictionType {
  return choice(config, 'prediction_type', ['epsilon', 'v_prediction', 'sample'] as const, 'epsilon');
}

/** The integer number of training timesteps; indices into ᾱ are checked against it. */
export function numTrainTimesteps(config: SchedulerConfig): number {
  const value = option(config, 'num_train_timesteps', 1000);
  if (!Number.isInteger(value) || value < 2) {
    throw new SchedulerConfigError('num_train_timesteps', 'num_train_timesteps must be an integer ≥ 2');
  }
  return value;
}
