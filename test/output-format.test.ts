import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LocalImageStore } from '../shared/storage/index.js';
import { encodeImage } from '../worker/image-encoding.js';
import { s3StorageEnv, startS3Server } from './helpers/s3-server.js';
import { pollJob, startStack, type TestStack } from './helpers/stack.js';

/** output_format / output_quality: what the worker encodes, what storage keeps, what the API serves. */

/** A small picture with structure in every channel. */
function picture(width: number, height: number) {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (x * 7 + y) & 255;
      data[i + 1] = (y * 5) & 255;
      data[i + 2] = ((x ^ y) * 3) & 255;
    }
  }
  return { width, height, data, seed: 1 };
}

describe('encodeImage', () => {
  it.each([
    ['png', 'image/png', 'png'],
    ['webp', 'image/webp', 'webp'],
    ['jpeg', 'image/jpeg', 'jpg'],
  ] as const)('encodes %s with its media type and extension, at the image size', async (format, contentType, extension) => {
    const encoded = await encodeImage(picture(72, 40), { format });
    expect(encoded.contentType).toBe(contentType);
    expect(encoded.extension).toBe(extension);
    const meta = await sharp(encoded.bytes).metadata();
    expect(meta.format).toBe(format);
    expect([meta.width, meta.height]).toEqual([72, 40]);
  });

  it('keeps every pixel in PNG, the default', async () => {
    const image = picture(64, 48);
    const encoded = await encodeImage(image);
    expect(encoded.contentType).toBe('image/png');
    const { data, info } = await sharp(encoded.bytes).raw().toBuffer({ resolveWithObject: true });
    expect(info.channels).toBe(3);
    expect(Buffer.from(data).equals(Buffer.from(image.data))).toBe(true);
  });

  it('uses the quality it is given for lossy formats', async () => {
    const image = picture(128, 128);
    for (const format of ['webp', 'jpeg'] as const) {
      const low = await encodeImage(image, { format, quality: 10 });
      const high = await encodeImage(image, { format, quality: 100 });
      expect(high.bytes.length, format).toBeGreaterThan(low.bytes.length);
    }
  });
});

describe('LocalImageStore', () => {
  it('serves each image with the media type its key names', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-formats-'));
    try {
      const store = new LocalImageStore(dir);
      for (const [key, type] of [
        ['jobs/a/0.png', 'image/png'],
        ['jobs/a/1.webp', 'image/webp'],
        ['jobs/a/2.jpg', 'image/jpeg'],
      ]) {
        await store.put(key as string, new Uint8Array([1, 2, 3]), type as string);
        const object = await store.get(key as string);
        object?.body.destroy();
        expect(object?.contentType, key).toBe(type);
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('through the service (S3 storage)', () => {
  let s3: Awaited<ReturnType<typeof startS3Server>>;
  let stack: TestStack;
  let base: string;

  beforeAll(async () => {
    s3 = await startS3Server();
    stack = await startStack(
      { MODEL_DIR: inject('tinyModelDir'), ...s3StorageEnv(s3.endpoint), DEFAULT_STEPS: '2' },
      { notifier: false },
    );
    base = stack.api.url;
  });
  afterAll(async () => {
    await stack?.close();
    await s3?.close();
  });

  const post = (body: unknown) => fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it.each([
    [{}, 'png', 'image/png', null],
    [{ output_format: 'png' }, 'png', 'image/png', null],
    [{ output_format: 'webp' }, 'webp', 'image/webp', 80],
    [{ output_format: 'webp', output_quality: 55 }, 'webp', 'image/webp', 55],
    [{ output_format: 'jpeg' }, 'jpeg', 'image/jpeg', 80],
    [{ output_format: 'jpeg', output_quality: 30 }, 'jpeg', 'image/jpeg', 30],
  ] as const)('%j → %s images, stored and served as %s', async (fields, format, contentType, quality) => {
    const res = await post({ prompt: 'a red fox', width: 72, height: 64, num_images: 2, ...fields });
    expect(res.status).toBe(202);
    const job = await pollJob(base, ((await res.json()) as any).id);
    expect(job.status).toBe('succeeded');
    expect(job.input).toMatchObject({ output_format: format, output_quality: quality });
    const extension = format === 'jpeg' ? 'jpg' : format;
    // Relative to the API without PUBLIC_URL.
    expect(job.outputs.images.map((i: any) => i.url)).toEqual([0, 1].map((n) => `/v1/jobs/${job.id}/images/${n}.${extension}`));
    for (const image of job.outputs.images) {
      const got = await fetch(`${base}${image.url}`);
      expect(got.status).toBe(200);
      expect(got.headers.get('content-type')).toBe(contentType);
      const meta = await sharp(Buffer.from(await got.arrayBuffer())).metadata();
      expect(meta.format).toBe(format);
      expect([meta.width, meta.height]).toEqual([72, 64]);
    }
    const stored = await stack.store.get(`jobs/${job.id}/0.${extension}`);
    stored?.body.destroy();
    expect(stored?.contentType).toBe(contentType);
  });

  it("answers 404 naming the right file for another format's name", async () => {
    const res = await post({ prompt: 'a blue jay', img_size: 64, output_format: 'webp' });
    const job = await pollJob(base, ((await res.json()) as any).id);
    const wrong = await fetch(`${base}/v1/jobs/${job.id}/images/0.png`);
    expect(wrong.status).toBe(404);
    const error = ((await wrong.json()) as any).error;
    expect(error).toMatchObject({ code: 'image_not_found', field: 'file' });
    expect(error.message).toContain('0.webp');
  });

  it.each([
    ['/v1/generate', 'jpeg', '&output_quality=70', 'image/jpeg'],
    ['/v1/generate', 'webp', '', 'image/webp'],
    ['/dreambooth', 'png', '', 'image/png'],
  ])('%s?output_format=%s answers the image in that format', async (route, format, extra, contentType) => {
    const res = await fetch(`${base}${route}?prompt=a+fox&img_size=64&output_format=${format}${extra}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(contentType);
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect(meta.format).toBe(format);
    expect([meta.width, meta.height]).toEqual([64, 64]);
  });

  it.each([
    ['an unknown format', { output_format: 'gif' }, 'output_format'],
    ['a format in capitals', { output_format: 'PNG' }, 'output_format'],
    ['quality 0', { output_format: 'webp', output_quality: 0 }, 'output_quality'],
    ['quality 101', { output_format: 'jpeg', output_quality: 101 }, 'output_quality'],
    ['fractional quality', { output_format: 'jpeg', output_quality: 50.5 }, 'output_quality'],
    ['quality as text', { output_format: 'webp', output_quality: 'high' }, 'output_quality'],
    ['quality with png', { output_format: 'png', output_quality: 90 }, 'output_quality'],
    ['quality with no format (png)', { output_quality: 90 }, 'output_quality'],
  ])('refuses %s with 400 naming the field, and queues nothing', async (_name, fields, field) => {
    const before = await stack.queue.count();
    const res = await post({ prompt: 'x', img_size: 64, ...fields });
    expect(res.status).toBe(400);
    const error = ((await res.json()) as any).error;
    expect(error.code).toBe('invalid_request');
    expect(error.field).toBe(field);
    expect(error.message).toContain(field);
    expect(await stack.queue.count()).toBe(before);
  });

  it('refuses a bad quality in a query string by name', async () => {
    const res = await fetch(`${base}/v1/generate?prompt=x&img_size=64&output_format=jpeg&output_quality=best`);
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).error.field).toBe('output_quality');
  });
});
