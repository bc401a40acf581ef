import type { Redis } from 'ioredis';
import { modelCapabilitiesKey, modelStatusKey } from './queues.js';
import { WorkerRegistry } from './worker-registry.js';

/**
 * What a worker learned about its model when it loaded it, published for whoever wants to see
 * what is loaded. The API's request checks do not wait for it: they use
 * `readModelCapabilities` (model-capabilities.ts), read from the export at boot.
 */
export interface PublishedModel {
  name: string;
  sizeMultiple: number;
  minSize: number;
  maxSize: number;
  defaultSize: number;
  fixedSize?: { width: number; height: number } | undefined;
  fixedBatch?: number | undefined;
  defaultScheduler: string;
  dtype: string;
  /** The filters its workers run, and those that run when a request names none. */
  filters?: { available: string[]; defaults: string[] } | undefined;
  publishedAt: number;
}

export async function publishModel(redis: Redis, prefix: string, model: PublishedModel): Promise<void> {
  await redis.set(modelCapabilitiesKey(prefix, model.name), JSON.stringify(model));
}

export async function readModel(redis: Redis, prefix: string, name: string): Promise<PublishedModel | null> {
  const raw = await redis.get(modelCapabilitiesKey(prefix, name));
  if (!raw) return null;
  try {
    return JSON.parse(raw) as PublishedModel;
  } catch {
    return null;
  }
}

/**
 * Whether a model can be served, by its name (one entry per model, so several models extend it).
 * Workers write the outcome of each load (`available`, or `unavailable` with the error); the
 * autoscaler adds when the next load is tried. Readers combine it with the worker registry.
 */
export interface ModelStatus {
  state: 'available' | 'unavailable';
  /** The last load error, when unavailable. */
  error: string | null;
  /** When this status was written (ms epoch). */
  at: number;
  /** When a worker tries to load it again (ms epoch), when known. */
  retryAt: number | null;
}

/** As clients see it: `available` (a worker serves it), `loading` (one is starting), `idle` (none runs: one starts when a job comes), `unavailable` (its last load failed). */
export type ModelAvailability = 'available' | 'loading' | 'idle' | 'unavailable';

export interface ModelState {
  name: string;
  state: ModelAvailability;
  error: string | null;
  /** Since when it is unavailable. */
  since: number | null;
  retryAt: number | null;
  workers: { starting: number; ready: number; busy: number; draining: number };
}

export async function publishModelStatus(redis: Redis, prefix: string, name: string, status: Omit<ModelStatus, 'at' | 'retryAt'>): Promise<void> {
  const value: ModelStatus = { ...status, at: Date.now(), retryAt: null };
  await redis.set(modelStatusKey(prefix, name), JSON.stringify(value));
}

export async function readModelStatus(redis: Redis, prefix: string, name: string): Promise<ModelStatus | null> {
  const raw = await redis.get(modelStatusKey(prefix, name));
  if (!raw) return null;
  try {
    return JSON.parse(raw) as ModelStatus;
  } catch {
    return null;
  }
}

/** Records when the next load of an unavailable model is tried (compare-and-set on the status it saw). */
export async function noteModelRetry(redis: Redis, prefix: string, name: string, retryAt: number): Promise<void> {
  const key = modelStatusKey(prefix, name);
  const raw = await redis.get(key);
  if (!raw) return;
  const status = JSON.parse(raw) as ModelStatus;
  if (status.state !== 'unavailable') return;
  // A worker that loaded it meanwhile wins: write only over the very value read.
  await redis.eval(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2]) end return 0",
    1,
    key,
    raw,
    JSON.stringify({ ...status, retryAt }),
  );
}

/**
 * How long a failed load keeps a model unavailable past its announced next try (or past the
 * failure, when nobody announced one: no autoscaler of ours retries it, e.g. KEDA scales the
 * workers). After that it reads `idle`: the next job is accepted and starts a worker, which tries
 * the model again, so a model that was fixed is never refused for good.
 */
export const UNAVAILABLE_HOLD_MS = 60_000;

/** A model's state from its last load outcome and the live workers that serve it. */
export function modelState(
  name: string,
  status: ModelStatus | null,
  workers: readonly { model: string; state: 'starting' | 'ready' | 'busy' | 'draining' }[],
  now = Date.now(),
): ModelState {
  const counts = { starting: 0, ready: 0, busy: 0, draining: 0 };
  for (const w of workers) if (w.model === name) counts[w.state] += 1;
  const serving = counts.ready + counts.busy + counts.draining > 0;
  const failed = status?.state === 'unavailable' && now < Math.max(status.retryAt ?? 0, status.at) + UNAVAILABLE_HOLD_MS;
  const state: ModelAvailability = serving ? 'available' : failed ? 'unavailable' : counts.starting > 0 ? 'loading' : 'idle';
  return {
    name,
    state,
    error: state === 'unavailable' ? (status?.error ?? null) : null,
    since: state === 'unavailable' ? (status?.at ?? null) : null,
    retryAt: state === 'unavailable' ? (status?.retryAt ?? null) : null,
    workers: counts,
  };
}

/**
 * The model's state when it is unavailable now, else null: what a submission checks. One read
 * while its last load did not fail lately (the usual case); the workers are listed only when it did.
 */
export async function readUnavailableModel(redis: Redis, prefix: string, name: string, now = Date.now()): Promise<ModelState | null> {
  const status = await readModelStatus(redis, prefix, name);
  if (status?.state !== 'unavailable' || modelState(name, status, [], now).state !== 'unavailable') return null;
  const state = modelState(name, status, await new WorkerRegistry(redis, prefix).list(), now);
  return state.state === 'unavailable' ? state : null;
}

/** The model's state now: its status and the registry's live workers, read together. */
export async function readModelState(redis: Redis, prefix: string, name: string): Promise<ModelState> {
  const [status, workers] = await Promise.all([readModelStatus(redis, prefix, name), new WorkerRegistry(redis, prefix).list()]);
  return modelState(name, status, workers);
}
