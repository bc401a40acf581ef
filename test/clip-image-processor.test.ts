/**
 * The safety checker's preprocessing against reference values from Pillow 9.4 + numpy
 * (test/fixtures/clip-preprocess-reference.json, written by
 * scripts/reference/clip-preprocess-reference.py with transformers' CLIPImageProcessor steps):
 * the 8-bit resize-and-crop and the float32 pixel_values must be identical, bit for bit.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  centerCrop,
  ClipImageProcessor,
  parsePreprocessorConfig,
  resizeLikePillow,
  shortestEdgeSize,
} from '../worker/pipeline/clip-image-processor.js';
import { float32ToFloat16 } from '../worker/pipeline/float16.js';
import { maxAbsDiff, readClipReference, referenceCrop, referenceInput, referencePixelValues } from './helpers/clip-reference.js';

const reference = readClipReference();
const processor = new ClipImageProcessor(parsePreprocessorConfig(reference.preprocessor));
const sha256 = (bytes: ArrayBufferView) => createHash('sha256').update(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).digest('hex');

describe('CLIP preprocessing against Pillow + numpy', () => {
  it('covers upscaling, downscaling, both aspects and a no-op resize', () => {
    expect(reference.cases.map((c) => c.name)).toEqual(['tiny-64x64', 'tiny-96x64', 'sd-512x512', 'sd-512x768', 'odd-300x200', 'same-224x224']);
    expect(reference.pillow).toBe('9.4.0');
  });

  it.each(reference.cases.map((c) => [c.name, c] as const))('%s: same 8-bit crop and same float32 pixel_values', async (_name, c) => {
    const input = referenceInput(c.width, c.height);
    expect(shortestEdgeSize(c.width, c.height, 224)).toEqual({ width: c.resized[0], height: c.resized[1] });

    const want = await referenceCrop(c);
    const got = processor.resizeAndCrop(input);
    expect([got.width, got.height]).toEqual([want.width, want.height]);
    expect(maxAbsDiff(got.data, want.data)).toBe(0);

    const values = processor.pixelValues(input);
    expect(values).toHaveLength(3 * 224 * 224);
    expect(maxAbsDiff(values, referencePixelValues(want, reference.normalized_levels))).toBe(0);
    // numpy's own arrays, not just our reading of its level table:
    expect(sha256(values)).toBe(c.pixel_values_float32_sha256);
    expect(sha256(float32ToFloat16(values))).toBe(c.pixel_values_float16_sha256);
  });

  it('matches numpy on every 8-bit level of every channel (rescale in float64, normalize in float32)', () => {
    const flat = { width: 256, height: 1, data: new Uint8Array(256 * 3) };
    for (let v = 0; v < 256; v++) flat.data.set([v, v, v], 3 * v);
    const exact = new ClipImageProcessor({ ...processor.config, resize: null, crop: null });
    const values = exact.pixelValues(flat);
    for (let c = 0; c < 3; c++) expect([...values.subarray(c * 256, (c + 1) * 256)]).toEqual(reference.normalized_levels[c]);
  });
});

describe('Pillow resampling details', () => {
  const gradient = (w: number, h: number) => {
    const data = new Uint8Array(w * h * 3);
    for (let i = 0; i < w * h; i++) data.set([(i * 7) % 256, (i * 13) % 256, (i * 29) % 256], 3 * i);
    return { width: w, height: h, data };
  };

  it('keeps a flat image flat in every filter (coefficients sum to one in fixed point)', () => {
    for (const resample of [1, 2, 3, 4, 5]) {
      const flat = { width: 37, height: 23, data: new Uint8Array(37 * 23 * 3).fill(200) };
      for (const [w, h] of [[224, 224], [11, 5], [37, 100]] as const) {
        const out = resizeLikePillow(flat, w, h, resample);
        expect(new Set(out.data), `resample ${resample} to ${w}×${h}`).toEqual(new Set([200]));
      }
    }
  });

  it('returns a copy when the size does not change, and resizes one axis alone', () => {
    const image = gradient(20, 10);
    const same = resizeLikePillow(image, 20, 10);
    expect(same.data).toEqual(image.data);
    expect(same.data).not.toBe(image.data);
    const wider = resizeLikePillow(image, 40, 10);
    expect([wider.width, wider.height]).toEqual([40, 10]);
    const taller = resizeLikePillow(image, 20, 30);
    expect([taller.width, taller.height]).toEqual([20, 30]);
  });

  it('refuses NEAREST (not a convolution in Pillow) and bad sizes', () => {
    expect(() => resizeLikePillow(gradient(4, 4), 8, 8, 0)).toThrow(/resample=0/);
    expect(() => resizeLikePillow(gradient(4, 4), 0, 8)).toThrow(RangeError);
    expect(() => parsePreprocessorConfig({ resample: 0 })).toThrow(/resample/);
  });

  it('pads with zeros, centred, when the image is smaller than the crop (transformers center_crop)', () => {
    const image = { width: 3, height: 2, data: new Uint8Array(3 * 2 * 3).fill(9) };
    const out = centerCrop(image, 6, 5);
    const rows = Array.from({ length: 5 }, (_, y) => Array.from({ length: 6 }, (_, x) => out.data[(y * 6 + x) * 3]));
    // ceil((5 − 2) / 2) = 2 rows above, ceil((6 − 3) / 2) = 2 columns left
    expect(rows).toEqual([
      [0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0],
      [0, 0, 9, 9, 9, 0],
      [0, 0, 9, 9, 9, 0],
      [0, 0, 0, 0, 0, 0],
    ]);
  });
});

describe('preprocessor_config.json', () => {
  it('reads the current CLIPImageProcessor form and the older CLIPFeatureExtractor one alike', () => {
    const current = parsePreprocessorConfig(reference.preprocessor);
    const legacy = parsePreprocessorConfig({
      crop_size: 224,
      do_center_crop: true,
      do_normalize: true,
      do_resize: true,
      feature_extractor_type: 'CLIPFeatureExtractor',
      image_mean: [0.48145466, 0.4578275, 0.40821073],
      image_std: [0.26862954, 0.26130258, 0.27577711],
      resample: 3,
      size: 224,
    });
    expect(legacy).toEqual({ ...current, rescaleFactor: 1 / 255 });
    expect(current).toMatchObject({ resize: { shortestEdge: 224 }, crop: { width: 224, height: 224 }, resample: 3 });
  });

  it('honours switched-off steps and exact sizes', () => {
    const config = parsePreprocessorConfig({ do_center_crop: false, do_normalize: false, do_rescale: false, size: { height: 32, width: 48 } });
    const out = new ClipImageProcessor(config).pixelValues(referenceInput(64, 64));
    expect(out).toHaveLength(3 * 32 * 48);
    expect(Math.max(...out)).toBeGreaterThan(1); // 0…255, not rescaled
  });

  it('names the key at fault', () => {
    expect(() => parsePreprocessorConfig({ size: 'big' })).toThrow(/size/);
    expect(() => parsePreprocessorConfig({ crop_size: { height: 0, width: 3 } })).toThrow(/crop_size/);
    expect(() => parsePreprocessorConfig({ image_std: [1, 0, 1] })).toThrow(/image_std/);
    expect(() => parsePreprocessorConfig({ image_mean: [1, 2] })).toThrow(/image_mean/);
    expect(() => parsePreprocessorConfig({ do_resize: 'yes' })).toThrow(/do_resize/);
  });
});
