/**
 * Schedulers by diffusers class name, and the short aliases the API accepts. A scheduler is built
 * from a `scheduler_config.json`; an alias swaps the model's scheduler for another one the way
 * `OtherScheduler.from_config(pipe.scheduler.config)` does in diffusers.
 */
import type { Scheduler, SchedulerConfig } from '../types.js';
import { DDIM_DEFAULTS, DdimScheduler } from './ddim-scheduler.js';
import { DPM_SOLVER_MULTISTEP_DEFAULTS, DpmSolverMultistepScheduler } from './dpm-solver-multistep-scheduler.js';
import {
  EULER_ANCESTRAL_DISCRETE_DEFAULTS,
  EulerAncestralDiscreteScheduler,
} from './euler-ancestral-discrete-scheduler.js';
import { EULER_DISCRETE_DEFAULTS, EulerDiscreteScheduler } from './euler-discrete-scheduler.js';
import { LCM_DEFAULTS, LcmScheduler } from './lcm-scheduler.js';
import { PNDM_DEFAULTS, PndmScheduler } from './pndm-scheduler.js';
import { UnknownSchedulerError } from './scheduler-config.js';

export { SchedulerConfigError, UnknownSchedulerError, type PredictionType } from './scheduler-config.js';

interface SchedulerClass {
  create(config: SchedulerConfig): Scheduler;
  /** diffusers' `__init__` defaults, which a loaded scheduler's `.config` carries. */
  defaults: Readonly<Record<string, unknown>>;
}

const CLASSES = {
  PNDMScheduler: { create: (c) => new PndmScheduler(c), defaults: PNDM_DEFAULTS },
  DDIMScheduler: { create: (c) => new DdimScheduler(c), defaults: DDIM_DEFAULTS },
  EulerDiscreteScheduler: { create: (c) => new EulerDiscreteScheduler(c), defaults: EULER_DISCRETE_DEFAULTS },
  EulerAncestralDiscreteScheduler: {
    create: (c) => new EulerAncestralDiscreteScheduler(c),
    defaults: EULER_ANCESTRAL_DISCRETE_DEFAULTS,
  },
  DPMSolverMultistepScheduler: {
    create: (c) => new DpmSolverMultistepScheduler(c),
    defaults: DPM_SOLVER_MULTISTEP_DEFAULTS,
  },
  LCMScheduler: { create: (c) => new LcmScheduler(c), defaults: LCM_DEFAULTS },
} satisfies Record<string, SchedulerClass>;

export type SchedulerClassName = keyof typeof CLASSES;

/** diffusers class names this service implements. */
export const SUPPORTED_SCHEDULERS: readonly SchedulerClassName[] = Object.freeze(
  Object.keys(CLASSES) as SchedulerClassName[],
);

/** Each alias: the class it names and the config keys it sets on top of the model's config. */
const ALIASES: Readonly<Record<string, { className: SchedulerClassName; overrides: SchedulerConfig }>> = {
  pndm: { className: 'PNDMScheduler', overrides: {} },
  ddim: { className: 'DDIMScheduler', overrides: {} },
  euler: { className: 'EulerDiscreteScheduler', overrides: {} },
  euler_a: { className: 'EulerAncestralDiscreteScheduler', overrides: {} },
  dpmpp_2m: {
    className: 'DPMSolverMultistepScheduler',
    overrides: { algorithm_type: 'dpmsolver++', solver_order: 2, use_karras_sigmas: false },
  },
  dpmpp_2m_karras: {
    className: 'DPMSolverMultistepScheduler',
    overrides: { algorithm_type: 'dpmsolver++', solver_order: 2, use_karras_sigmas: true },
  },
  lcm: { className: 'LCMScheduler', overrides: {} },
};

/** Every name `resolveScheduler` accepts (aliases, then class names), for request validation. */
export const SCHEDULER_ALIASES: readonly string[] = Object.freeze([...Object.keys(ALIASES), ...SUPPORTED_SCHEDULERS]);

function isClassName(name: string): name is SchedulerClassName {
  return Object.hasOwn(CLASSES, name);
}

/** Builds the diffusers scheduler `className` from a scheduler config (snake_case keys). */
export function createScheduler(className: string, config: SchedulerConfig): Scheduler {
  if (!isClassName(className)) throw new UnknownSchedulerError(className, SUPPORTED_SCHEDULERS);
  return CLASSES[className].create(config);
}

/**
 * The class and config for a request's scheduler name. The model's config is first completed
 * with its own class's defaults (as a loaded diffusers scheduler's `.config` is), so swapping
 * PNDM for Euler on Stable Diffusion 1.5 keeps PNDM's "leading" spacing exactly as
 * `EulerDiscreteScheduler.from_config(pipe.scheduler.config)` would; keys the new class does not
 * take are ignored by it, and the alias's own settings win.
 */
export function resolveScheduler(
  nameOrAlias: string,
  modelConfig: SchedulerConfig,
): { className: string; config: SchedulerConfig } {
  const alias = Object.hasOwn(ALIASES, nameOrAlias) ? ALIASES[nameOrAlias] : undefined;
  const className = alias?.className ?? (isClassName(nameOrAlias) ? nameOrAlias : undefined);
  if (className === undefined) throw new UnknownSchedulerError(nameOrAlias, SCHEDULER_ALIASES);

  const modelClass = modelConfig._class_name;
  const modelDefaults = typeof modelClass === 'string' && isClassName(modelClass) ? CLASSES[modelClass].defaults : {};
  const config: SchedulerConfig = { ...modelDefaults, ...modelConfig, ...alias?.overrides };
  config._class_name = className;
  return { className, config };
}
