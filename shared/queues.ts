/**
 * Queue and job names: the API enqueues, the worker consumes; both import them from here. Each
 * model has its own queue (its catalogue entry's `queue`): the default model's is `generate`,
 * another's `generate.<name>` (shared/model-catalogue.ts).
 */
export const GENERATE_QUEUE = 'generate';
export const GENERATE_JOB = 'generate';

/** Redis key where a worker publishes what its loaded model can do. */
export const modelCapabilitiesKey = (prefix: string, model: string) => `${prefix}:models:${model}`;
/** Redis key of a model's last load outcome (available, or unavailable with the error). */
export const modelStatusKey = (prefix: string, model: string) => `${prefix}:models:${model}:status`;

/** Webhook deliveries run from their own queue, so a slow receiver never holds a GPU worker. */
export const WEBHOOK_QUEUE = 'webhooks';
export const WEBHOOK_DELIVER_JOB = 'deliver';

/** Channel on which the API asks workers to abort a running job (the message is the job id). */
export const cancelChannel = (prefix: string) => `${prefix}:control:cancel`;
/** Marker a processor checks at start, so a cancel racing the job's start still lands. */
export const canceledKey = (prefix: string, jobId: string) => `${prefix}:control:canceled:${jobId}`;
