import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { failedJobStatus } from '../api/job-outcome.js';
import { InvalidRequestError, loadPipeline } from '../worker/pipeline/index.js';
import type { GenerateOptions, GenerateRequest, Pipeline } from '../worker/pipeline/types.js';
import { startStack, type TestStack } from './helpers/stack.js';
import { until } from './helpers/webhook-receiver.js';

/**
 * A synchronous route (GET /v1/generate, /dreambooth) answers a job that ended without an image
 * with a status that says whose fault it was, in the error shape with the job beside it: the
 * tutorial's client (requests.get on /dreambooth) sees a non-2xx status, never a 200 or a 500 for
 * its own deadline.
 */

/** The real tiny pipeline, except that a prompt can make it slow, refuse the request, or break. */
class ScriptedPipeline implements Pipeline {
  constructor(private readonly inner: Pipeline) {}
  get capabilities() {
    return this.inner.capabilities;
  }
  async generate(request: GenerateRequest, options: GenerateOptions = {}) {
    if (request.prompt === 'refused by the worker') throw new InvalidRequestError('prompt', 'this worker refuses that prompt');
    if (request.prompt === 'breaks the worker') throw new Error('a bug in the worker');
    if (request.prompt === 'slow') {
      // Stops only when told to (a cancel or a deadline), like a long denoising loop.
      await new Promise<void>((resolve) => options.signal?.addEventListener('abort', () => resolve()));
      const aborted = new Error('aborted');
      aborted.name = 'AbortError';
      throw aborted;
    }
    return this.inner.generate(request, options);
  }
  release() {
    return this.inner.release();
  }
}

let stack: TestStack;
let dir: string;
let inner: Pipeline;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-sync-failures-'));
  inner = await loadPipeline(inject('tinyModelDir'), { cpuThreads: 1 });
  stack = await startStack(
    { MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, JOB_ATTEMPTS: '1', DEFAULT_STEPS: '2', SYNC_TIMEOUT_S: '20' },
    { pipeline: new ScriptedPipeline(inner) },
  );
});
afterAll(async () => {
  await stack?.close();
  await inner?.release();
  await fs.rm(dir, { recursive: true, force: true });
});

async function sync(route: string, params: Record<string, string>) {
  const res = await fetch(`${stack.api.url}${route}?${new URLSearchParams(params)}`);
  const body = res.headers.get('content-type')?.includes('json') ? ((await res.json()) as Record<string, any>) : null;
  return { res, body };
}

describe('a synchronous job that ends without its image', () => {
  it('answers 504 for its own deadline (timeout_s)', async () => {
    const { res, body } = await sync('/dreambooth', { prompt: 'slow', img_size: '64', timeout_s: '1' });
    expect(res.status).toBe(504);
    expect(body?.error).toMatchObject({ code: 'timeout', message: expect.any(String) });
    expect(body?.job).toMatchObject({ status: 'failed', error: { code: 'timeout' } });
    expect(res.headers.get('location')).toBe(body?.job.links.self);
  });

  it('answers 422 for input the worker refused', async () => {
    const { res, body } = await sync('/v1/generate', { prompt: 'refused by the worker', img_size: '64' });
    expect(res.status).toBe(422);
    expect(body?.error.code).toBe('invalid_request');
  });

  it('answers 409 when the job was canceled', async () => {
    const answer = sync('/v1/generate', { prompt: 'slow', img_size: '64' });
    const running = await until(
      async () => (await stack.queue.getJobs(['active'])).find((j) => j.data.prompt === 'slow'),
      (job) => job !== undefined,
    );
    const cancel = await fetch(`${stack.api.url}/v1/jobs/${running!.id}/cancel`, { method: 'POST' });
    expect(cancel.status).toBeLessThan(300);
    const { res, body } = await answer;
    expect(res.status).toBe(409);
    expect(body?.error.code).toBe('canceled');
  });

  it('answers 500 only for a fault of ours', async () => {
    const { res, body } = await sync('/dreambooth', { prompt: 'breaks the worker', img_size: '64' });
    expect(res.status).toBe(500);
    expect(body?.error.code).toBe('internal_error');
  });

  it('still answers the PNG when the job succeeds', async () => {
    const { res } = await sync('/dreambooth', { prompt: 'a fine fox', img_size: '64' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/png');
  });

  it('maps every outcome code to the status the README documents', () => {
    for (const [status, error, expected] of [
      ['failed', 'invalid_request', 422],
      ['failed', 'unknown_scheduler', 422],
      ['failed', 'timeout', 504],
      ['expired', 'expired', 504],
      ['canceled', 'canceled', 409],
      ['failed', 'storage_error', 503],
      ['failed', 'model_unavailable', 503],
      ['failed', 'internal_error', 500],
      ['failed', 'something_new', 500],
    ] as const) {
      expect(failedJobStatus({ status, error: { code: error, message: '' } }), error).toBe(expected);
    }
  });
});
