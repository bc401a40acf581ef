import type { ModelCapabilities } from '../shared/model-capabilities.js';
import type { ModelEntry } from '../shared/model-catalogue.js';
import type { ModelState } from '../shared/model-registry.js';
import type { QueueLoad } from '../shared/queue-load.js';
import type { AppDeps } from './deps.js';
import { HttpError } from './http-errors.js';

/** Retry-After for a model whose next load time is unknown or past (the autoscaler retries with backoff). */
const DEFAULT_RETRY_AFTER_S = 30;

/**
 * The rule for a model that cannot be loaded: while its last load failed and no worker serves it,
 * a new job for it is refused with 503 `model_unavailable` (nothing is queued; Retry-After says
 * when it is tried again), and the jobs that were waiting for it when the load failed fail with
 * the same code (worker/model-unavailable.ts). No job waits on a model that is not there.
 */
export async function refuseUnavailableModel(deps: Pick<AppDeps, 'modelStates'>, name: string): Promise<void> {
  if (!deps.modelStates) return;
  // Unreadable (Redis away, or not connected yet at start): the enqueue that follows decides.
  const states = deps.modelStates;
  const state = await (states.unavailable ? states.unavailable(name) : states.state(name)).catch(() => null);
  if (state?.state !== 'unavailable') return;
  const retryInS = state.retryAt === null ? null : Math.ceil((state.retryAt - Date.now()) / 1000);
  const when = retryInS !== null && retryInS > 0 ? ` in ${retryInS} s` : ' shortly';
  const retryAfterS = retryInS !== null && retryInS > 0 ? retryInS : DEFAULT_RETRY_AFTER_S;
  throw new HttpError(
    503,
    'model_unavailable',
    `Model ${JSON.stringify(name)} cannot be loaded (${state.error ?? 'no reason given'}); it is tried again${when}. Nothing was queued.`,
    'model',
    undefined,
    { 'Retry-After': String(retryAfterS) },
  );
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** A model as GET /v1/models lists it. */
export function modelView(entry: ModelEntry, capabilities: ModelCapabilities | null, state: ModelState | null, load: QueueLoad | null, defaultSteps: number) {
  return {
    name: entry.name,
    default: entry.isDefault,
    trigger_words: entry.triggerWords,
    queue: entry.queue,
    autoscaling: { min_workers: entry.autoscaling.minWorkers, initial_workers: entry.autoscaling.initialWorkers, max_workers: entry.autoscaling.maxWorkers ?? null },
    load: load ? { queued: load.load - load.active, running: load.active, total: load.load } : null,
    state: state?.state ?? 'unknown',
    error: state?.error ?? null,
    unavailable_since: iso(state?.since ?? null),
    retry_at: iso(state?.retryAt ?? null),
    workers: state?.workers ?? null,
    capabilities: capabilities
      ? {
          size_multiple: capabilities.sizeMultiple,
          min_size: capabilities.minSize,
          max_size: capabilities.maxSize,
          default_size: capabilities.defaultSize,
          fixed_size: capabilities.fixedSize ?? null,
          default_scheduler: capabilities.defaultScheduler,
          schedulers: Object.keys(capabilities.maxStepsByScheduler),
          default_steps: defaultSteps,
          dtype: capabilities.dtype,
        }
      : null,
  };
}
