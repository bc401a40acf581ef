/** Queue and job names: the API enqueues, the worker consumes; both import them from here. */
export const GENERATE_QUEUE = 'generate';
export const GENERATE_JOB = 'generate';

/** Redis key where a worker publishes what its loaded model can do. */
export const modelCapabilitiesKey = (prefix: string, model: string) => `${prefix}:models:${model}`;
