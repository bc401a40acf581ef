import { encodeFailure, type JobResult } from '../shared/job-queue.js';
import { JobPayloadSchema, type JobPayload } from '../shared/job-schema.js';
import type { Logger } from '../shared/logger.js';
import { imageKey, resultKey, type ImageStore } from '../shared/storage/index.js';
import { describeCause, ServiceError } from '../shared/errors.js';
import { createFilterSet, type FilterSet } from './filters/registry.js';
import { encodeImage } from './image-encoding.js';
import { readStoredResult, storedResultBytes, writeWithRetry, type StorageHealthListener, type StorageRetry } from './job-storage.js';
import type { GenerateRequest, Pipeline } from './pipeline/types.js';
import { generateScreened } from './screening.js';

/** The abort reason of a job whose lock another worker now holds (or nobody: it lapsed during a Redis outage). */
export const LOCK_LOST = 'lock_lost';

/** What the processor needs to know about the job it runs; BullMQ's Job satisfies it. */
export interface RunningJob {
  id?: string | undefined;
  data: unknown;
  attemptsMade: number;
  /** How many times a worker has taken the job, this time included (BullMQ's); unknown: read as maybe more than once. */
  attemptsStarted?: number;
  /** When the job was created (BullMQ's `timestamp`): tells a stored result of this job from another's. */
  timestamp?: number;
  /** This run's lock token (BullMQ's): published in the heartbeat so a dead worker's job is put back at once. */
  token?: string | undefined;
  updateProgress(progress: object): Promise<void>;
}

/**
 * A job failure with the stable code the API shows. `retryable: false` tells the consumer to fail
 * the job at once instead of trying again.
 */
export class JobFailure extends Error {
  constructor(
    readonly code: string,
    detail: string,
    readonly retryable: boolean,
    /** Put the job back in the queue as it was (no attempt spent): it never started here. */
    readonly requeue = false,
  ) {
    super(encodeFailure(code, detail));
    this.name = 'JobFailure';
  }
}

export interface ProcessorDeps {
  pipeline: Pipeline;
  store: ImageStore;
  logger: Logger;
  workerId: string;
  /** Minimum milliseconds between progress writes to Redis (the last step always goes). */
  progressIntervalMs?: number;
  /** Cancel markers: a job canceled while a worker was taking it never starts. */
  control?: { isCanceled(jobId: string): Promise<boolean> };
  /** Told once the job really starts (the webhook's `started` event); a failure here is only logged. */
  onStarted?: (job: RunningJob, payload: JobPayload) => Promise<void>;
  /** Server-wide cap on one run, in seconds (JOB_MAX_RUN_S); 0 = none. The request's timeout_s can only lower it. */
  maxRunS?: number;
  /** The filters this worker runs and the model's defaults; default: the built-in ones for `pipeline`. */
  filters?: FilterSet;
  /** Tries per image while a filter screens it out (FILTER_MAX_TRIES); default 3. */
  filterMaxTries?: number;
  /** How long failing uploads are retried (STORAGE_UPLOAD_RETRY_S); default: one try. */
  storageRetry?: StorageRetry;
  /**
   * Hears storage failures and recoveries: the worker stops taking jobs while storage fails.
   * With it, a job whose start finds storage unreadable goes back to the queue untouched.
   */
  onStorageHealth?: StorageHealthListener;
}

/**
 * What the processor tells the job loop about a run as it goes: `generated` once the job no
 * longer needs the GPU (its images exist, or its generation failed or never started), so the next
 * job can start generating while this one's images are encoded and uploaded.
 */
export interface JobStages {
  /**
   * Resolves true once this job may use the GPU: at once, unless the job was taken early, in the
   * last moments of the generation before it; false: that generation ran well past its estimate
   * and the job goes back to the queue untouched. Rejects when `signal` aborts.
   */
  gpu?(signal?: AbortSignal): Promise<boolean>;
  /** The job's generation begins; `shape` names generations of the same cost (size, steps, images). */
  generating?(shape: string): void;
  /** `ok`: the generation ran to its end (its time says how long such a generation takes). */
  generated(ok?: boolean): void;
  /**
   * Resolves once the queue holds the job's outcome (completed, failed, or back in the queue),
   * after the processor has returned: until then the job is still active under this worker's
   * lock, and a kill leaves it to whoever puts the dead worker's jobs back.
   */
  settled?: Promise<void>;
}

export type Processor = (job: RunningJob, signal?: AbortSignal, stages?: JobStages) => Promise<JobResult>;

export function createProcessor(deps: ProcessorDeps): Processor {
  const interval = deps.progressIntervalMs ?? 100;
  const filterSet = deps.filters ?? createFilterSet(deps.pipeline);
  /** When this worker's last upload succeeded (storage known to answer); 0: none yet. */
  let lastWriteOkAt = 0;
  return async (job, signal, stages) => {
    try {
      return await run(job, signal, stages);
    } finally {
      // Idempotent: a run that failed before or during its generation gives the GPU back here.
      stages?.generated();
    }
  };

  async function run(job: RunningJob, signal: AbortSignal | undefined, stages: JobStages | undefined): Promise<JobResult> {
    const jobId = job.id ?? 'unknown';
    const log = deps.logger.child({ jobId, model: deps.pipeline.capabilities.name });
    const parsed = JobPayloadSchema.safeParse(job.data);
    if (!parsed.success) throw new JobFailure('invalid_request', `malformed job payload: ${parsed.error.message}`, false);
    const payload: JobPayload = parsed.data;
    // Past its ttl_s it never runs, even if a worker took it before the API's sweep ended it.
    if (payload.expiresAt !== undefined && payload.expiresAt <= Date.now()) {
      log.info('job expired in the queue: not run');
      throw new JobFailure('expired', 'the job was still queued when its ttl_s ran out; it never ran', false);
    }
    // The cancel marker and an earlier run's stored result are read side by side: the GPU is idle
    // until the job starts generating.
    const canceled = deps.control ? deps.control.isCanceled(jobId).catch(() => false) : Promise.resolve(false);
    const earlierRun = mayHaveRunBefore(job, lastWriteOkAt) ? findEarlierRun(deps, job, jobId, log) : Promise.resolve(null);
    if (await canceled) {
      earlierRun.catch(() => undefined);
      log.info('job was canceled before it started');
      throw new JobFailure('canceled', 'the job was canceled before it started', false);
    }
    const earlier = await earlierRun;
    if (earlier) {
      log.info({ ranOn: earlier.workerId }, 'job result reused: an earlier run of this job stored it, its completion never reached the queue');
      return earlier;
    }
    if (stages?.gpu) {
      const ready = await stages.gpu(signal).catch((err: unknown) => {
        throw signal?.aborted ? abortFailure(signal) : err;
      });
      if (!ready) {
        log.info('job taken early, but the generation before it ran long: back to the queue');
        throw new JobFailure('gpu_busy', 'the GPU did not free up in time; the job goes back to the queue', true, true);
      }
    }
    log.info({ attempt: job.attemptsMade + 1, width: payload.width, height: payload.height, steps: payload.numInferenceSteps }, 'job started');
    await deps.onStarted?.(job, payload).catch((err: unknown) => log.warn({ err }, 'could not emit the started event'));

    // The deadline aborts the same way a cancel does (between denoising steps), then reads as `timeout`.
    const limitS = Math.min(payload.timeoutS ?? Infinity, deps.maxRunS ? deps.maxRunS : Infinity);
    const deadline = new AbortController();
    const timer = Number.isFinite(limitS) ? setTimeout(() => deadline.abort(), limitS * 1000) : undefined;
    const runSignal = signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal;

    let lastWrite = 0;
    let pending: Promise<void> = Promise.resolve();
    const onStep = (step: number, total: number) => {
      const now = Date.now();
      if (step < total && now - lastWrite < interval) return;
      lastWrite = now;
      // Progress is advisory: a failed write must not fail the job.
      pending = job.updateProgress({ step, total }).catch((err: unknown) => log.warn({ err }, 'progress update failed'));
    };

    let generated;
    let ok = false;
    try {
      // The request's filters, else the model's; an unknown name fails the job as bad input.
      const filters = filterSet.resolve(payload.filters);
      stages?.generating?.(generationShape(payload));
      generated = await generateScreened(deps.pipeline, toGenerateRequest(payload), filters, deps.filterMaxTries ?? 3, { signal: runSignal, onStep });
      ok = true;
    } catch (err) {
      if (deadline.signal.aborted && !signal?.aborted) {
        throw new JobFailure('timeout', `the job ran past its ${limitS} s deadline`, false);
      }
      throw signal?.aborted ? abortFailure(signal) : toJobFailure(err);
    } finally {
      clearTimeout(timer);
      // The GPU is free from here on: encoding and upload overlap the next job's generation.
      stages?.generated(ok);
    }
    await pending;

    log.info({ ms: Math.round(generated.timings.total), images: generated.images.length }, 'job generated');

    // Kept and retried through a storage outage: the images exist, only their upload is missing.
    const store = (key: string, bytes: Uint8Array, contentType: string) =>
      writeWithRetry(() => deps.store.put(key, bytes, contentType), deps.storageRetry ?? { spanMs: 0, maxDelayMs: 0 }, {
        signal,
        onHealth: deps.onStorageHealth,
        onRetry: (err, attempt, delayMs) => log.warn({ err, key, attempt, retryInMs: delayMs }, `upload failed (${describeCause(err)}); retrying`),
      }).then(() => {
        lastWriteOkAt = Date.now();
      }).catch((err: unknown) => {
        if (signal?.aborted) throw abortFailure(signal);
        throw new JobFailure('storage_error', err instanceof Error ? err.message : String(err), true);
      });

    const images = [];
    for (const [index, image] of generated.images.entries()) {
      const encoded = await encodeImage(image, { format: payload.outputFormat, quality: payload.outputQuality });
      const key = imageKey(jobId, index, encoded.extension);
      await store(key, encoded.bytes, encoded.contentType);
      images.push({
        key,
        width: image.width,
        height: image.height,
        seed: image.seed,
        prompt: image.prompt,
        filters: image.verdicts,
        tries: image.tries,
        blocked: image.blocked,
      });
    }
    const retried = generated.images.filter((image) => image.tries > 1 || image.blocked);
    if (retried.length > 0) {
      log.info({ retried: retried.map((i) => ({ seed: i.seed, tries: i.tries, blocked: i.blocked })) }, 'filters screened out images');
    }
    const result: JobResult = { images, seed: payload.seed, workerId: deps.workerId, timingsMs: { ...generated.timings } };
    if (job.timestamp !== undefined) await store(resultKey(jobId), storedResultBytes(job.timestamp, result), 'application/json');
    log.info({ ms: Math.round(generated.timings.total), images: images.length }, 'job succeeded');
    return result;
  }
}

/** An upload within this long says storage answers: a job's first start need not read it to find out. */
export const STORAGE_PROVEN_MS = 10_000;

/**
 * Whether the job's start reads storage for a result an earlier run stored. Only a job started
 * before (BullMQ's attemptsStarted above 1: retried, stalled, put back) can have one; a first
 * start reads it anyway unless an upload succeeded lately, as a probe, so that a job starting
 * while storage is down goes back to the queue untouched instead of running to an upload that
 * cannot happen.
 */
function mayHaveRunBefore(job: RunningJob, lastWriteOkAt: number): boolean {
  if (job.attemptsStarted === undefined || job.attemptsStarted > 1) return true;
  return Date.now() - lastWriteOkAt > STORAGE_PROVEN_MS;
}

/** What sets a generation's cost: generations of one shape take about as long as each other. */
export function generationShape(payload: JobPayload): string {
  const filters = payload.filters === undefined ? '' : [...payload.filters].sort().join(',');
  return `${payload.width}x${payload.height}:${payload.numInferenceSteps}:${payload.numImages}:${payload.scheduler ?? ''}:${payload.guidanceScale > 1 ? 'cfg' : ''}:${filters}`;
}

/** What the pipeline is asked to generate for a queued job. */
export function toGenerateRequest(payload: JobPayload): GenerateRequest {
  return {
    prompt: payload.prompt,
    negativePrompt: payload.negativePrompt,
    width: payload.width,
    height: payload.height,
    numInferenceSteps: payload.numInferenceSteps,
    guidanceScale: payload.guidanceScale,
    seed: payload.seed,
    numImages: payload.numImages,
    scheduler: payload.scheduler,
    ...(payload.prompts ? { prompts: payload.prompts } : {}),
  };
}

/**
 * The result an earlier run of this job stored (its completion was lost: Redis away longer than
 * the lock, or its worker killed after the upload). When storage cannot be read and its probe
 * fails too, the job goes back to the queue unstarted (the worker pauses until storage answers)
 * rather than run to an upload that cannot happen; a read that fails alone is logged and the
 * job runs.
 */
async function findEarlierRun(deps: ProcessorDeps, job: RunningJob, jobId: string, log: Logger): Promise<JobResult | null> {
  if (job.timestamp === undefined) return null;
  try {
    return await readStoredResult(deps.store, jobId, job.timestamp);
  } catch (err) {
    const down = await deps.store.check().then(
      () => null,
      (probe: unknown) => (probe instanceof Error ? probe : new Error(String(probe))),
    );
    if (!down) {
      log.warn({ err }, 'could not read whether an earlier run stored this job; running it');
      return null;
    }
    deps.onStorageHealth?.(down);
    throw new JobFailure('storage_error', down.message, true, deps.onStorageHealth !== undefined);
  }
}

/** Why the run was stopped from outside: a cancel, or a lost lock. */
function abortFailure(signal: AbortSignal): JobFailure {
  // Nothing of a run that lost its lock is written (BullMQ refuses a finish without it); the job runs once more.
  if (signal.reason === LOCK_LOST) return new JobFailure('lock_lost', 'the worker lost the job lock', true);
  return new JobFailure('canceled', 'the job was canceled', false);
}

/** Pipeline errors carry a `code`; unknown errors are internal and worth one more attempt. */
export function toJobFailure(err: unknown): JobFailure {
  if (err instanceof JobFailure) return err;
  const e = err as { code?: unknown; name?: unknown; message?: unknown; retryable?: unknown; field?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (e?.name === 'AbortError' || e?.code === 'canceled') return new JobFailure('canceled', 'the job was canceled', false);
  if (err instanceof ServiceError) return new JobFailure(err.code, message, err.retryable);
  if (e?.code === 'invalid_request' || e?.code === 'unknown_scheduler') {
    return new JobFailure('invalid_request', message, false);
  }
  return new JobFailure('internal_error', message, true);
}
