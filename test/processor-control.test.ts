import { describe, expect, it } from 'vitest';
import type { JobPayload } from '../shared/job-schema.js';
import { resultKey, type ImageStore } from '../shared/storage/index.js';
import type { GenerateOptions, GenerateRequest, Pipeline, StageTimings } from '../worker/pipeline/types.js';
import { createProcessor, JobFailure, type RunningJob } from '../worker/processor.js';
import { silentLogger } from './helpers/stack.js';
import { jobPayload } from './helpers/job-payload.js';

/** The processor's control paths with a fake pipeline: cancel markers, deadlines, the started hook. */

/** Steps every 10 ms until done or aborted, like the real denoising loop. */
function fakePipeline(totalSteps: number) {
  const seen = { calls: 0, aborted: false, steps: 0 };
  const pipeline: Pipeline = {
    capabilities: { name: 'fake', sizeMultiple: 8, minSize: 8, maxSize: 64, defaultSize: 8, defaultScheduler: 'DDIMScheduler', dtype: 'float32' },
    async generate(_request: GenerateRequest, options: GenerateOptions = {}) {
      seen.calls += 1;
      for (let step = 1; step <= totalSteps; step += 1) {
        if (options.signal?.aborted) {
          seen.aborted = true;
          throw Object.assign(new Error('aborted'), { name: 'AbortError', code: 'canceled' });
        }
        await new Promise((r) => setTimeout(r, 10));
        seen.steps = step;
        options.onStep?.(step, totalSteps);
      }
      return { images: [{ width: 8, height: 8, seed: 1, data: new Uint8Array(8 * 8 * 3) }], timings: { total: 0 } as StageTimings };
    },
    release: async () => undefined,
  };
  return { pipeline, seen };
}

const store: ImageStore = {
  put: async () => undefined,
  get: async () => null,
  check: async () => undefined,
} as unknown as ImageStore;

const payload = (extra: Partial<JobPayload> = {}): JobPayload => jobPayload({ numInferenceSteps: 10, ...extra });
const job = (data: JobPayload): RunningJob => ({ id: 'job-1', data, attemptsMade: 0, updateProgress: async () => undefined });

const failureOf = async (promise: Promise<unknown>) => {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(JobFailure);
  return err as JobFailure;
};

describe('processor control', () => {
  it('refuses a job whose cancel marker is set, before running or announcing it', async () => {
    const { pipeline, seen } = fakePipeline(5);
    let started = 0;
    const processor = createProcessor({
      pipeline,
      store,
      logger: silentLogger,
      workerId: 'w',
      control: { isCanceled: async (id) => id === 'job-1' },
      onStarted: async () => {
        started += 1;
      },
    });
    const failure = await failureOf(processor(job(payload())));
    expect([failure.code, failure.retryable]).toEqual(['canceled', false]);
    expect(seen.calls).toBe(0);
    expect(started).toBe(0);
  });

  it('fails with timeout (not retryable) when JOB_MAX_RUN_S passes, aborting the pipeline', async () => {
    const { pipeline, seen } = fakePipeline(1000);
    const processor = createProcessor({ pipeline, store, logger: silentLogger, workerId: 'w', maxRunS: 0.2 });
    const failure = await failureOf(processor(job(payload())));
    expect([failure.code, failure.retryable]).toEqual(['timeout', false]);
    expect(seen.aborted).toBe(true);
    expect(seen.steps).toBeLessThan(1000);
  });

  it("lets a request's timeout_s lower the server-wide limit, and the started hook hear each run", async () => {
    const { pipeline, seen } = fakePipeline(1000);
    const started: string[] = [];
    const processor = createProcessor({
      pipeline,
      store,
      logger: silentLogger,
      workerId: 'w',
      maxRunS: 600,
      onStarted: async (j) => {
        started.push(j.id as string);
      },
    });
    const failure = await failureOf(processor(job(payload({ timeoutS: 1 }))));
    expect(failure.code).toBe('timeout');
    expect(failure.message).toMatch(/1 s deadline/);
    expect(seen.aborted).toBe(true);
    expect(started).toEqual(['job-1']);
  });

  it('tells a cancel (the BullMQ signal) from a deadline', async () => {
    const { pipeline } = fakePipeline(1000);
    const processor = createProcessor({ pipeline, store, logger: silentLogger, workerId: 'w', maxRunS: 600 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const failure = await failureOf(processor(job(payload()), controller.signal));
    expect(failure.code).toBe('canceled');
  });

  it("reads storage for an earlier run's result when the job was started before, and on a first start only until an upload proves storage answers", async () => {
    const { pipeline } = fakePipeline(1);
    const reads: string[] = [];
    const counting: ImageStore = { ...store, get: async (key: string) => (reads.push(key), null) } as unknown as ImageStore;
    const processor = createProcessor({ pipeline, store: counting, logger: silentLogger, workerId: 'w' });
    const run = (id: string, attemptsStarted: number) => processor({ ...job(payload()), id, timestamp: 1, attemptsStarted });
    // Nothing uploaded yet: the first start reads (a storage probe).
    await run('a', 1);
    expect(reads).toEqual([resultKey('a')]);
    // An upload just succeeded: a first start cannot have an earlier run and skips the read...
    await run('b', 1);
    expect(reads).toEqual([resultKey('a')]);
    // ...a job started before always reads, however healthy storage looks.
    await run('c', 2);
    expect(reads).toEqual([resultKey('a'), resultKey('c')]);
  });
});
