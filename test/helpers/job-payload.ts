import type { JobPayload } from '../../shared/job-schema.js';

/**
 * A queued job's payload as the API writes it, sized for the tests' fake pipelines (8 px, two
 * steps); `extra` sets what a test cares about.
 */
export const jobPayload = (extra: Partial<JobPayload> = {}): JobPayload => ({
  prompt: 'x',
  negativePrompt: '',
  width: 8,
  height: 8,
  numInferenceSteps: 2,
  guidanceScale: 1,
  seed: 1,
  numImages: 1,
  model: 'fake',
  randomSeed: false,
  ...extra,
});
