/**
 * The safety checker's image preprocessing, as transformers' `CLIPImageProcessor` does it from an
 * export's `feature_extractor/preprocessor_config.json` (diffusers hands it PIL images made from
 * the decoded pixels): resize (shortest edge to `size`), center crop, rescale by 1/255, normalize
 * with `image_mean` / `image_std`, channels first.
 *
 * transformers resizes with Pillow, so the resize here is Pillow's own 8-bit resampling
 * (libImaging/Resample.c) written again: a separable convolution, horizontal pass first, whose
 * filter support widens with the downscale factor; coefficients normalised per output pixel and
 * held in 22-bit fixed point; each pass rounded and clipped to 8 bits. The float steps follow
 * numpy's dtypes (rescale in float64 then float32; normalize in float32). Against Pillow 9.4 +
 * numpy the output is bit-identical (test/clip-image-processor.test.ts; libvips/sharp's bicubic
 * differs, see `npm run bench:clip-preprocess`).
 */

/** 8-bit RGB, rows top to bottom, pixels interleaved (HWC). */
export interface Rgb8 {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Pillow's resampling filters (`Image.Resampling`), by the number transformers stores as `resample`. */
interface ResampleFilter {
  name: string;
  support: number;
  weight(x: number): number;
}

const BOX: ResampleFilter = { name: 'box', support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) };
const BILINEAR: ResampleFilter = {
  name: 'bilinear',
  support: 1,
  weight: (x) => {
    const a = Math.abs(x);
    return a < 1 ? 1 - a : 0;
  },
};
const HAMMING: ResampleFilter = {
  name: 'hamming',
  support: 1,
  weight: (x) => {
    const a = Math.abs(x);
    if (a === 0) return 1;
    if (a >= 1) return 0;
    const px = a * Math.PI;
    // Pillow's 0.54f and 0.46f are single-precision constants.
    return (Math.sin(px) / px) * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(px));
  },
};
/** Keys' cubic convolution with a = −0.5 (Catmull–Rom), support 2. */
const BICUBIC: ResampleFilter = {
  name: 'bicubic',
  support: 2,
  weight: (x) => {
    const a = -0.5;
    const t = Math.abs(x);
    if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
    if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
    return 0;
  },
};
const sinc = (x: number) => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));
const LANCZOS: ResampleFilter = { name: 'lanczos', support: 3, weight: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) };

/** PIL.Image.Resampling values; NEAREST (0) is not a convolution in Pillow and is not offered. */
const FILTERS: Record<number, ResampleFilter> = { 1: LANCZOS, 2: BILINEAR, 3: BICUBIC, 4: BOX, 5: HAMMING };

/** Fixed-point bits of Pillow's 8-bit coefficients: 32 − 8 − 2 (two bits of headroom for lobes). */
const PRECISION_BITS = 22;

interface Coefficients {
  /** Per output pixel: first input index and count. */
  first: Int32Array;
  count: Int32Array;
  /** `ksize` fixed-point weights per output pixel. */
  weights: Int32Array;
  ksize: number;
}

/** Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a full-width box. */
function coefficients(inSize: number, outSize: number, filter: ResampleFilter): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const inverse = 1 / filterScale;
    // C's (int) cast truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let sum = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = filter.weight((x + xmin - center + 0.5) * inverse);
      sum += k[x]!;
    }
    for (let x = 0; x < ksize; x++) {
      const w = x < xmax ? (sum !== 0 ? k[x]! / sum : k[x]!) : 0;
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * 2 ** PRECISION_BITS) : Math.trunc(0.5 + w * 2 ** PRECISION_BITS);
    }
    first[xx] = xmin;
    count[xx] = xmax;
  }
  return { first, count, weights, ksize };
}

/** Rounds a fixed-point sum to 8 bits, clipped, as Pillow's `clip8` (an arithmetic shift). */
function clip8(sum: number): number {
  const v = sum >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

const HALF = 1 << (PRECISION_BITS - 1);

/**
 * Pillow's `Image.resize((width, height), resample)` on an RGB image (no box, no reducing_gap).
 * The horizontal pass covers only the rows the vertical pass reads, as Pillow's does.
 */
export function resizeLikePillow(image: Rgb8, width: number, height: number, resample = 3): Rgb8 {
  const filter = FILTERS[resample];
  if (!filter) throw new RangeError(`resample=${resample} is not a filter this resize implements (1…5)`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`cannot resize to ${width}×${height}`);
  }
  const needHorizontal = width !== image.width;
  const needVertical = height !== image.height;
  if (!needHorizontal && !needVertical) return { width, height, data: image.data.slice() };

  const vertical = coefficients(image.height, height, filter);
  const rowFirst = vertical.first[0]!;
  const rowEnd = vertical.first[height - 1]! + vertical.count[height - 1]!;

  let src = image.data;
  let srcWidth = image.width;
  let rowOffset = 0; // the first source row `src` holds
  if (needHorizontal) {
    const h = coefficients(image.width, width, filter);
    const rows = rowEnd - rowFirst;
    const out = new Uint8Array(width * rows * 3);
    for (let yy = 0; yy < rows; yy++) {
      const inRow = (yy + rowFirst) * image.width * 3;
      for (let xx = 0; xx < width; xx++) {
        const xmin = h.first[xx]!;
        const n = h.count[xx]!;
        const kBase = xx * h.ksize;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < n; x++) {
          const w = h.weights[kBase + x]!;
          const p = inRow + (x + xmin) * 3;
          s0 += image.data[p]! * w;
          s1 += image.data[p + 1]! * w;
          s2 += image.data[p + 2]! * w;
        }
        const o = (yy * width + xx) * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    }
    src = out;
    srcWidth = width;
    rowOffset = rowFirst;
  }
  if (!needVertical) return { width, height, data: src };

  const out = new Uint8Array(width * height * 3);
  const stride = srcWidth * 3;
  for (let yy = 0; yy < height; yy++) {
    const ymin = vertical.first[yy]! - rowOffset;
    const n = vertical.count[yy]!;
    const kBase = yy * vertical.ksize;
    for (let xx = 0; xx < width; xx++) {
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let y = 0; y < n; y++) {
        const w = vertical.weights[kBase + y]!;
        const p = (y + ymin) * stride + xx * 3;
        s0 += src[p]! * w;
        s1 += src[p + 1]! * w;
        s2 += src[p + 2]! * w;
      }
      const o = (yy * width + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width, height, data: out };
}

/** What preprocessor_config.json asks for, normalised. */
export interface ClipPreprocessing {
  /** null: no resize. */
  resize: { shortestEdge: number } | { width: number; height: number } | null;
  resample: number;
  /** null: no center crop. */
  crop: { width: number; height: number } | null;
  /** null: values stay 0…255. */
  rescaleFactor: number | null;
  /** null: no normalisation. */
  normalize: { mean: [number, number, number]; std: [number, number, number] } | null;
}

/** transformers' defaults for a CLIPImageProcessor (OpenAI CLIP's mean and std). */
export const CLIP_DEFAULTS = {
  size: 224,
  mean: [0.48145466, 0.4578275, 0.40821073] as [number, number, number],
  std: [0.26862954, 0.26130258, 0.27577711] as [number, number, number],
};

function positiveInt(value: unknown, key: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new Error(`${key} must be a positive integer`);
  return value;
}

function triple(value: unknown, key: string, fallback: [number, number, number]): [number, number, number] {
  if (value === undefined || value === null) return fallback;
  const list = typeof value === 'number' ? [value, value, value] : value;
  if (!Array.isArray(list) || list.length !== 3 || !list.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw new Error(`${key} must be a number or a list of three numbers`);
  }
  return list as [number, number, number];
}

function flag(config: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const value = config[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'boolean') throw new Error(`${key} must be true or false`);
  return value;
}

/**
 * Reads preprocessor_config.json as transformers would (CLIPImageProcessor, or the older
 * CLIPFeatureExtractor files with plain-integer `size` and `crop_size`). Throws an Error naming
 * the key at fault.
 */
export function parsePreprocessorConfig(config: Record<string, unknown>): ClipPreprocessing {
  let resize: ClipPreprocessing['resize'] = null;
  if (flag(config, 'do_resize', true)) {
    const size = config['size'] ?? { shortest_edge: CLIP_DEFAULTS.size };
    if (typeof size === 'number') {
      // get_size_dict(size, default_to_square=False): an integer is the shortest edge.
      resize = { shortestEdge: positiveInt(size, 'size') };
    } else if (size && typeof size === 'object' && 'shortest_edge' in size) {
      resize = { shortestEdge: positiveInt((size as Record<string, unknown>)['shortest_edge'], 'size.shortest_edge') };
    } else if (size && typeof size === 'object' && 'height' in size && 'width' in size) {
      const s = size as Record<string, unknown>;
      resize = { width: positiveInt(s['width'], 'size.width'), height: positiveInt(s['height'], 'size.height') };
    } else {
      throw new Error('size must be an integer, {"shortest_edge": n} or {"height": h, "width": w}');
    }
  }
  const resample = config['resample'] ?? 3;
  if (typeof resample !== 'number' || !FILTERS[resample]) {
    throw new Error(`resample must be a Pillow convolution filter (1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming); got ${JSON.stringify(resample)}`);
  }
  let crop: ClipPreprocessing['crop'] = null;
  if (flag(config, 'do_center_crop', true)) {
    const size = config['crop_size'] ?? CLIP_DEFAULTS.size;
    if (typeof size === 'number') {
      crop = { width: positiveInt(size, 'crop_size'), height: size };
    } else if (size && typeof size === 'object' && 'height' in size && 'width' in size) {
      const s = size as Record<string, unknown>;
      crop = { width: positiveInt(s['width'], 'crop_size.width'), height: positiveInt(s['height'], 'crop_size.height') };
    } else {
      throw new Error('crop_size must be an integer or {"height": h, "width": w}');
    }
  }
  let rescaleFactor: number | null = null;
  if (flag(config, 'do_rescale', true)) {
    const factor = config['rescale_factor'] ?? 1 / 255;
    if (typeof factor !== 'number' || !Number.isFinite(factor) || factor <= 0) throw new Error('rescale_factor must be a positive number');
    rescaleFactor = factor;
  }
  const normalize = flag(config, 'do_normalize', true)
    ? { mean: triple(config['image_mean'], 'image_mean', CLIP_DEFAULTS.mean), std: triple(config['image_std'], 'image_std', CLIP_DEFAULTS.std) }
    : null;
  if (normalize?.std.some((s) => s === 0)) throw new Error('image_std must not hold a zero');
  return { resize, resample: resample, crop, rescaleFactor, normalize };
}

/** transformers' get_resize_output_image_size: short side → `edge`, long side scaled and truncated. */
export function shortestEdgeSize(width: number, height: number, edge: number): { width: number; height: number } {
  if (width <= height) return { width: edge, height: Math.trunc((edge * height) / width) };
  return { width: Math.trunc((edge * width) / height), height: edge };
}

/**
 * transformers' center_crop: top = (H − h) // 2, left = (W − w) // 2; an image smaller than the
 * crop is padded with zeros (⌈pad / 2⌉ before) first.
 */
export function centerCrop(image: Rgb8, width: number, height: number): Rgb8 {
  if (image.width === width && image.height === height) return image;
  // Zero padding before the image on each axis where it is smaller than the crop …
  const padTop = Math.max(0, Math.ceil((height - image.height) / 2));
  const padLeft = Math.max(0, Math.ceil((width - image.width) / 2));
  // … and the crop's first row and column in the padded image.
  const top = Math.floor((image.height - height) / 2) + padTop;
  const left = Math.floor((image.width - width) / 2) + padLeft;
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const sy = top + y - padTop;
    if (sy < 0 || sy >= image.height) continue;
    for (let x = 0; x < width; x++) {
      const sx = left + x - padLeft;
      if (sx < 0 || sx >= image.width) continue;
      const s = (sy * image.width + sx) * 3;
      const o = (y * width + x) * 3;
      out[o] = image.data[s]!;
      out[o + 1] = image.data[s + 1]!;
      out[o + 2] = image.data[s + 2]!;
    }
  }
  return { width, height, data: out };
}

export class ClipImageProcessor {
  /** float32 value of each 8-bit level, per channel: rescale and normalize are per-pixel maps. */
  private readonly levels: Float32Array;

  constructor(readonly config: ClipPreprocessing) {
    this.levels = new Float32Array(3 * 256);
    const { rescaleFactor, normalize } = config;
    for (let c = 0; c < 3; c++) {
      // numpy: (x.astype(float64) * factor).astype(float32), then (x − mean) / std with float32 mean and std.
      const mean = normalize ? Math.fround(normalize.mean[c]!) : 0;
      const std = normalize ? Math.fround(normalize.std[c]!) : 1;
      for (let level = 0; level < 256; level++) {
        let v = rescaleFactor === null ? level : Math.fround(level * rescaleFactor);
        if (normalize) v = Math.fround(Math.fround(v - mean) / std);
        this.levels[c * 256 + level] = v;
      }
    }
  }

  /** The size of `pixelValues`' output for an image of this size. */
  outputSize(width: number, height: number): { width: number; height: number } {
    if (this.config.crop) return this.config.crop;
    return this.resizedSize(width, height);
  }

  private resizedSize(width: number, height: number): { width: number; height: number } {
    const resize = this.config.resize;
    if (!resize) return { width, height };
    return 'shortestEdge' in resize ? shortestEdgeSize(width, height, resize.shortestEdge) : resize;
  }

  /** The 8-bit image after resize and crop: what transformers holds before rescaling. */
  resizeAndCrop(image: Rgb8): Rgb8 {
    const size = this.resizedSize(image.width, image.height);
    const resized = this.config.resize ? resizeLikePillow(image, size.width, size.height, this.config.resample) : image;
    return this.config.crop ? centerCrop(resized, this.config.crop.width, this.config.crop.height) : resized;
  }

  /** `pixel_values` of one image: float32, channels first (3 × h × w). */
  pixelValues(image: Rgb8): Float32Array {
    const cropped = this.resizeAndCrop(image);
    const plane = cropped.width * cropped.height;
    const out = new Float32Array(3 * plane);
    const { data } = cropped;
    for (let i = 0; i < plane; i++) {
      out[i] = this.levels[data[3 * i]!]!;
      out[plane + i] = this.levels[256 + data[3 * i + 1]!]!;
      out[2 * plane + i] = this.levels[512 + data[3 * i + 2]!]!;
    }
    return out;
  }
}
