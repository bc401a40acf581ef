import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import type { ImageStore } from '../shared/storage/index.js';
import { JobConsumer, type WorkerState } from './consumer.js';
import type { Pipeline } from './pipeline/types.js';
import { createProcessor, type ProcessorDeps, type Processor } from './processor.js';
import { StorageGate } from './storage-gate.js';

export interface JobRunnerDeps {
  config: Pick<Readonly<Config>, 'queuePrefix' | 'worker' | 'storageRetry'> & { model?: { queue: string } };
  connection: Redis;
  pipeline: Pipeline;
  store: ImageStore;
  logger: Logger;
  workerId: string;
  /** Cancel markers, the run-time cap, the `started` webhook (worker/job-hooks.ts). */
  hooks?: Pick<ProcessorDeps, 'control' | 'onStarted' | 'maxRunS'>;
  /** The filters this worker runs (the model's and FILTER_MODULES') and the tries per image. */
  filters?: Pick<ProcessorDeps, 'filters' | 'filterMaxTries'>;
  /** Wraps the processor (the heartbeat's job tracking). */
  wrap?: (processor: Processor) => Processor;
  onStateChange?: (state: WorkerState) => void;
  /** Storage started failing (what it said) or answers again (null). */
  onPaused?: (reason: string | null) => void;
}

export interface JobRunner {
  consumer: JobConsumer;
  gate: StorageGate;
  /** Stops probing storage; the consumer is closed by its owner (drain or force). */
  stopGate(): Promise<void>;
}

/**
 * The worker's job loop as one piece: the processor, the BullMQ consumer, and the storage gate
 * between them that pauses the consumer while storage fails (so queued jobs keep their attempts)
 * and retries a finished job's uploads for STORAGE_UPLOAD_RETRY_S.
 */
export function createJobRunner(deps: JobRunnerDeps): JobRunner {
  const { config, logger } = deps;
  const maxDelayMs = config.storageRetry.maxDelayS * 1000;
  const gate = new StorageGate({
    store: deps.store,
    logger,
    maxDelayMs,
    onChange: (problem) => {
      deps.onPaused?.(problem === null ? null : `storage is failing: ${problem}`);
      if (problem === null) consumer.release();
      else consumer.hold();
    },
  });
  const processor = createProcessor({
    pipeline: deps.pipeline,
    store: deps.store,
    logger,
    workerId: deps.workerId,
    ...deps.hooks,
    ...deps.filters,
    storageRetry: { spanMs: config.storageRetry.uploadRetryS * 1000, maxDelayMs },
    onStorageHealth: gate.report,
  });
  const consumer: JobConsumer = new JobConsumer({
    connection: deps.connection,
    prefix: config.queuePrefix,
    // The queue of the model this worker holds (WORKER_MODEL): it takes no other model's jobs.
    queue: config.model?.queue,
    processor: deps.wrap ? deps.wrap(processor) : processor,
    logger,
    lockDurationMs: config.worker.lockDurationMs,
    stalledIntervalMs: config.worker.stalledIntervalMs,
    overlap: config.worker.overlap,
    finishingJobs: config.worker.finishingJobs,
    earlyTakeMs: config.worker.earlyTakeMs,
    onStateChange: deps.onStateChange,
  });
  return { consumer, gate, stopGate: () => gate.stop() };
}
