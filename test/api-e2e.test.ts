import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startS3Server } from './helpers/s3-server.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';

/** The walking skeleton end to end: HTTP → Redis (BullMQ) → worker → ONNX → PNG → S3 → HTTP. */

let s3: Awaited<ReturnType<typeof startS3Server>>;
let stack: TestStack;
let base: string;

const post = (body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  fetch(`${base}/v1/jobs`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });

async function runJob(body: Record<string, unknown>) {
  const res = await post(body);
  expect(res.status).toBe(202);
  const job = (await res.json()) as Record<string, any>;
  expect(res.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
  return pollJob(base, job.id);
}

async function fetchPixels(url: string) {
  // Links are relative to the API without PUBLIC_URL.
  const res = await fetch(new URL(url, stack.api.url));
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('image/png');
  const png = Buffer.from(await res.arrayBuffer());
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

beforeAll(async () => {
  s3 = await startS3Server();
  stack = await startStack({
    MODEL_DIR: inject('tinyModelDir'),
    STORAGE_DRIVER: 's3',
    S3_ENDPOINT: s3.endpoint,
    S3_BUCKET: 'images',
    S3_CREATE_BUCKET: 'true',
    S3_ACCESS_KEY_ID: 'S3RVER',
    S3_SECRET_ACCESS_KEY: 'S3RVER',
    DEFAULT_STEPS: '4',
  });
  base = stack.api.url;
});

afterAll(async () => {
  await stack?.close();
  await s3?.close();
});

describe('submit and poll', () => {
  it('runs a job to a PNG of the requested size stored in S3', async () => {
    const job = await runJob({ prompt: 'a red fox in the snow', width: 96, height: 64, seed: 7, num_inference_steps: 3, scheduler: 'ddim' });
    expect(job.status).toBe('succeeded');
    expect(job.progress).toEqual({ step: 3, total: 3 });
    expect(job.outputs.seed).toBe(7);
    expect(job.outputs.images).toHaveLength(1);
    expect(job.outputs.images[0]).toMatchObject({ width: 96, height: 64, seed: 7 });
    expect(job.started_at).not.toBeNull();
    expect(job.finished_at).not.toBeNull();
    const image = await fetchPixels(job.outputs.images[0].url);
    expect([image.width, image.height, image.channels]).toEqual([96, 64, 3]);
    // A random-weight model still draws structure: not one flat colour.
    expect(new Set(image.data).size).toBeGreaterThan(10);
    const stored = await stack.store.get(`jobs/${job.id}/0.png`);
    expect(stored).not.toBeNull();
    stored?.body.destroy();
  });

  it('gives identical pixels for the same seed and different ones for another seed', async () => {
    const request = { prompt: 'a lighthouse at dusk', img_size: 64, num_inference_steps: 3, guidance_scale: 5 };
    const [a, b, c] = await Promise.all([
      runJob({ ...request, seed: 1234 }),
      runJob({ ...request, seed: 1234 }),
      runJob({ ...request, seed: 4321 }),
    ]);
    const [pa, pb, pc] = await Promise.all([a, b, c].map((j) => fetchPixels(j.outputs.images[0].url)));
    expect(pa!.data.equals(pb!.data)).toBe(true);
    expect(pa!.data.equals(pc!.data)).toBe(false);
  });

  it('draws and reports a seed when none is given, and makes num_images images', async () => {
    const job = await runJob({ prompt: 'two owls', img_size: 64, num_images: 2, num_inference_steps: 2 });
    expect(job.status).toBe('succeeded');
    expect(Number.isInteger(job.input.seed)).toBe(true);
    expect(job.outputs.images.map((i: { seed: number }) => i.seed)).toEqual([job.input.seed, job.input.seed + 1]);
    const [first, second] = await Promise.all(job.outputs.images.map((i: { url: string }) => fetchPixels(i.url)));
    expect(first!.data.equals(second!.data)).toBe(false);
  });

  it('answers 404 for an unknown job, and for an image index the job does not have', async () => {
    const res = await fetch(`${base}/v1/jobs/00000000-0000-0000-0000-000000000000`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as any).error.code).toBe('job_not_found');
    const job = await runJob({ prompt: 'one image', img_size: 64, num_inference_steps: 1 });
    const missing = await fetch(`${base}/v1/jobs/${job.id}/images/5.png`);
    expect(missing.status).toBe(404);
  });
});

describe('synchronous endpoints', () => {
  it('GET /dreambooth answers a 64×64 PNG, as the tutorial client calls it', async () => {
    const res = await fetch(`${base}/dreambooth?prompt=${encodeURIComponent('photo of unqtkn dog having breakfast')}&img_size=64`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(res.headers.get('x-job-id')).toMatch(/^[0-9a-f-]{36}$/);
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
  });

  it('GET /v1/generate takes every field as a query parameter', async () => {
    const res = await fetch(`${base}/v1/generate?prompt=a+cat&width=64&height=80&seed=3&num_inference_steps=2&scheduler=pndm`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-seed')).toBe('3');
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect([meta.width, meta.height]).toEqual([64, 80]);
  });

  it('rejects bad query input by field and queues nothing', async () => {
    const before = await stack.queue.getJobCountByTypes('waiting', 'active', 'completed', 'failed', 'delayed');
    for (const [query, field] of [
      ['img_size=64', 'prompt'],
      ['prompt=x&img_size=abc', 'img_size'],
      ['prompt=x&img_size=65', 'img_size'],
      ['prompt=x&num_images=2', 'num_images'],
      ['prompt=x&bogus=1', 'bogus'],
    ] as const) {
      const res = await fetch(`${base}/v1/generate?${query}`);
      expect(res.status, query).toBe(400);
      expect(((await res.json()) as any).error.field, query).toBe(field);
    }
    expect(await stack.queue.getJobCountByTypes('waiting', 'active', 'completed', 'failed', 'delayed')).toBe(before);
  });
});

describe('validation', () => {
  const cases: [string, unknown, number, string][] = [
    ['missing prompt', { img_size: 64 }, 400, 'prompt'],
    ['empty prompt', { prompt: '' }, 400, 'prompt'],
    ['blank prompt', { prompt: '   ' }, 400, 'prompt'],
    ['non-string prompt', { prompt: 42 }, 400, 'prompt'],
    ['width not a multiple of 8', { prompt: 'x', width: 100 }, 400, 'width'],
    ['width too large', { prompt: 'x', width: 4096 }, 400, 'width'],
    ['height zero', { prompt: 'x', height: 0 }, 400, 'height'],
    ['img_size not a multiple of 8', { prompt: 'x', img_size: 63 }, 400, 'img_size'],
    ['img_size with width', { prompt: 'x', img_size: 64, width: 64 }, 400, 'img_size'],
    ['zero steps', { prompt: 'x', num_inference_steps: 0 }, 400, 'num_inference_steps'],
    ['too many steps', { prompt: 'x', num_inference_steps: 100000 }, 400, 'num_inference_steps'],
    ['fractional steps', { prompt: 'x', num_inference_steps: 2.5 }, 400, 'num_inference_steps'],
    ['negative guidance', { prompt: 'x', guidance_scale: -1 }, 400, 'guidance_scale'],
    ['string guidance', { prompt: 'x', guidance_scale: 'high' }, 400, 'guidance_scale'],
    ['too many images', { prompt: 'x', num_images: 99 }, 400, 'num_images'],
    ['negative seed', { prompt: 'x', seed: -1 }, 400, 'seed'],
    ['seed beyond 2^32', { prompt: 'x', seed: 2 ** 32 }, 400, 'seed'],
    ['unknown scheduler', { prompt: 'x', scheduler: 'bogus' }, 400, 'scheduler'],
    ['unknown model', { prompt: 'x', model: 'sdxl' }, 400, 'model'],
    ['unknown field', { prompt: 'x', strength: 0.5 }, 400, 'strength'],
    ['array body', [{ prompt: 'x' }], 400, 'body'],
    ['malformed JSON', '{"prompt": "x"', 400, 'body'],
    ['oversized body', { prompt: 'x'.repeat(70_000) }, 413, 'body'],
  ];

  it.each(cases)('%s → %i naming %s, nothing queued', async (_name, body, status, field) => {
    const before = await stack.queue.count();
    const res = await post(body);
    expect(res.status).toBe(status);
    const error = ((await res.json()) as any).error;
    expect(error.field).toBe(field);
    expect(typeof error.code).toBe('string');
    expect(error.message.length).toBeGreaterThan(5);
    expect(await stack.queue.count()).toBe(before);
  });

  it('refuses a body that is not JSON with 415', async () => {
    const res = await post('prompt=x', { 'content-type': 'text/plain' });
    expect(res.status).toBe(415);
    expect(((await res.json()) as any).error.field).toBe('content-type');
  });
});

describe('health', () => {
  it('is live and ready when Redis and S3 answer', async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as any).checks).toEqual({
      redis: { ok: true },
      storage: { ok: true },
      models: { [stack.config.model.name]: { ok: true, state: 'available', error: null } },
    });
  });
});
