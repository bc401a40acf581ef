/**
 * Image filters as units: the grayscale measure and its threshold on the cases it must tell
 * apart, the filter set (defaults from the model, unknown names, registration), and operator
 * modules loaded the way FILTER_MODULES loads them.
 */
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it, vi } from 'vitest';
import { chromaPercentile, DEFAULT_GRAYSCALE_MAX_CHROMA, grayscaleFilter } from '../worker/filters/grayscale-filter.js';
import { nsfwFilter } from '../worker/filters/nsfw-filter.js';
import {
  checkedVerdict,
  createFilterSet,
  FilterRegistrationError,
  FilterSet,
  registerFilterModules,
  UnknownFilterError,
} from '../worker/filters/registry.js';
import type { RgbImage } from '../worker/pipeline/types.js';

const W = 64;
const H = 64;
const context = { prompt: 'p', seed: 1, index: 0, attempt: 1 };

function image(pixel: (x: number, y: number) => [number, number, number]): RgbImage {
  const data = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) data.set(pixel(x, y).map((v) => Math.max(0, Math.min(255, Math.round(v)))), (y * W + x) * 3);
  return { width: W, height: H, data, seed: 1 };
}

/** A smooth grey scene: what a black-and-white picture is made of. */
const grey = (x: number, y: number) => 40 + ((x * 3 + y * 2) % 180);

/** Deterministic standard normals (Box–Muller on a small LCG). */
function normals(seed: number): () => number {
  let s = seed >>> 0;
  const uniform = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

async function jpegRoundTrip(img: RgbImage, quality: number): Promise<RgbImage> {
  const jpeg = await sharp(Buffer.from(img.data), { raw: { width: W, height: H, channels: 3 } }).jpeg({ quality }).toBuffer();
  const { data } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
  return { ...img, data: new Uint8Array(data) };
}

describe('grayscale filter: 99th-percentile chroma ≤ 12', () => {
  const filter = grayscaleFilter();
  const verdict = async (img: RgbImage) => filter.check(img, context);

  it('screens out exact grey, grey with channel noise up to σ = 2.5 levels, and grey through JPEG', async () => {
    expect(DEFAULT_GRAYSCALE_MAX_CHROMA).toBe(12);
    const exact = image((x, y) => [grey(x, y), grey(x, y), grey(x, y)]);
    expect(chromaPercentile(exact)).toBe(0);
    expect(await verdict(exact)).toMatchObject({ passed: false, score: 0, threshold: 12 });
    for (const sigma of [1, 2, 2.5]) {
      const n = normals(sigma);
      const noisy = image((x, y) => [grey(x, y) + sigma * n(), grey(x, y) + sigma * n(), grey(x, y) + sigma * n()]);
      const v = await verdict(noisy);
      expect(v.passed, `σ=${sigma}: score ${v.score}`).toBe(false);
    }
    expect((await verdict(await jpegRoundTrip(exact, 75))).passed).toBe(false);
  });

  it('passes toned and coloured images: sepia, a 2 % colour splash on grey, a muted colour scene', async () => {
    const sepia = image((x, y) => {
      const v = grey(x, y);
      return [v * 1.07, v * 0.74 + 20, v * 0.43 + 10];
    });
    const splash = image((x, y) => (x < 9 && y < 9 ? [200, 30, 30] : [grey(x, y), grey(x, y), grey(x, y)])); // 81 of 4096 pixels
    const muted = image((x, y) => [grey(x, y) + 12 * Math.sin(x / 9), grey(x, y), grey(x, y) + 12 * Math.cos(y / 7)]);
    for (const [name, img] of [['sepia', sepia], ['splash', splash], ['muted', muted]] as const) {
      const v = await verdict(img);
      expect(v.passed, `${name}: score ${v.score}`).toBe(true);
      expect(v.detail).toBeUndefined();
    }
    expect(chromaPercentile(sepia)).toBeGreaterThan(40);
  });

  it('draws the line at a tint of 12 levels', async () => {
    const tint = (t: number) => image((x, y) => [grey(x, y) + t, grey(x, y), grey(x, y)]);
    expect(await verdict(tint(12))).toMatchObject({ passed: false, score: 12 });
    expect(await verdict(tint(13))).toMatchObject({ passed: true, score: 13 });
  });

  it('says why it screened an image out, and takes another threshold', async () => {
    const faint = image((x, y) => [grey(x, y) + 8, grey(x, y), grey(x, y)]);
    expect(await verdict(faint)).toMatchObject({ passed: false, score: 8, detail: expect.stringMatching(/grayscale/) });
    expect(await grayscaleFilter(5).check(faint, context)).toMatchObject({ passed: true, score: 8, threshold: 5 });
  });
});

describe('filter set', () => {
  const checker = { check: vi.fn(async () => ({ nsfw: true, ms: 1 })) };

  it('turns nsfw on by default when the model has a safety checker, off (and absent) otherwise', () => {
    expect(createFilterSet({ safetyChecker: checker }).describe()).toEqual({ available: ['nsfw', 'grayscale'], defaults: ['nsfw'] });
    expect(createFilterSet({ safetyChecker: undefined }).describe()).toEqual({ available: ['grayscale'], defaults: [] });
  });

  it('resolves a request’s names in order, the defaults when it names none, and refuses unknown ones as bad input', () => {
    const set = createFilterSet({ safetyChecker: checker });
    expect(set.resolve(undefined).map((f) => f.name)).toEqual(['nsfw']);
    expect(set.resolve(['grayscale', 'nsfw']).map((f) => f.name)).toEqual(['grayscale', 'nsfw']);
    expect(set.resolve([])).toEqual([]);
    const error = (() => {
      try {
        set.resolve(['bogus']);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(UnknownFilterError);
    expect(error).toMatchObject({ code: 'invalid_request', field: 'filters', message: expect.stringMatching(/"bogus".*nsfw, grayscale/) });
    expect(() => createFilterSet({ safetyChecker: undefined }).resolve(['nsfw'])).toThrow(/no safety checker/);
  });

  it('registers an operator’s filter and refuses bad names, duplicates and non-filters', () => {
    const set = new FilterSet().register({ name: 'clip_score', check: () => ({ passed: true }) });
    expect(set.names).toEqual(['clip_score']);
    expect(() => set.register({ name: 'clip_score', check: () => ({ passed: true }) })).toThrow(FilterRegistrationError);
    expect(() => set.register({ name: 'Bad Name', check: () => ({ passed: true }) })).toThrow(/must match/);
    expect(() => set.register({ name: 'nocheck' } as never)).toThrow(/check/);
    expect(() => set.setDefaults(['missing'])).toThrow(/not registered/);
  });

  it('nsfw: the checker’s verdict as a filter verdict', async () => {
    expect(await nsfwFilter(checker).check(image(() => [0, 0, 0]), context)).toMatchObject({ passed: false });
    expect(await nsfwFilter({ check: async () => ({ nsfw: false, ms: 0 }) }).check(image(() => [0, 0, 0]), context)).toEqual({ passed: true });
  });

  it('holds a filter to the verdict shape: a malformed answer is an error, not a pass', () => {
    expect(() => checkedVerdict('x', undefined)).toThrow(/not a verdict/);
    expect(() => checkedVerdict('x', { passed: 'yes' })).toThrow(/not a verdict/);
    expect(checkedVerdict('x', { passed: true, score: Number.NaN, threshold: 3, extra: 1 })).toEqual({ passed: true, threshold: 3 });
  });
});

describe('FILTER_MODULES', () => {
  const logger = { info: vi.fn(), warn: vi.fn() };
  const fixture = (name: string) => path.join('test', 'fixtures', 'filters', name);

  it('imports a module (relative to the working directory) and registers what its factory makes', async () => {
    const set = createFilterSet({ safetyChecker: undefined });
    await registerFilterModules(set, [fixture('watermark-filter.mjs')], { modelDir: '/models/x', logger });
    expect(set.names).toEqual(['grayscale', 'watermark']);
    const [watermark] = set.resolve(['watermark']);
    expect(await watermark!.check(image(() => [255, 255, 255]), context)).toMatchObject({ passed: false, detail: expect.stringContaining('/models/x') });
    expect(set.defaults).toEqual([]); // an operator's filter runs when requests name it
  });

  it('stops with the module and the reason when one cannot be registered', async () => {
    const set = createFilterSet({ safetyChecker: undefined });
    await expect(registerFilterModules(set, [fixture('broken-filter.mjs')], { modelDir: '.', logger })).rejects.toThrow(
      /FILTER_MODULES: .*broken-filter\.mjs: .*Not A Name/,
    );
    await expect(registerFilterModules(set, [fixture('no-such-module.mjs')], { modelDir: '.', logger })).rejects.toThrow(FilterRegistrationError);
  });
});
