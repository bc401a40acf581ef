import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import type { Rgb8 } from '../../worker/pipeline/clip-image-processor.js';

/**
 * test/fixtures/clip-preprocess-reference.json, written by
 * scripts/reference/clip-preprocess-reference.py (Pillow + numpy, transformers' CLIPImageProcessor
 * steps), and the input images it was computed from.
 */
export interface ReferenceCase {
  name: string;
  width: number;
  height: number;
  resized: [number, number];
  crop: [number, number, number, number];
  crop_png_base64: string;
  pixel_values_float32_sha256: string;
  pixel_values_float16_sha256: string;
}

export interface ClipReference {
  pillow: string;
  numpy: string;
  preprocessor: Record<string, unknown>;
  /** normalized_levels[c][v]: the float32 value numpy gives 8-bit level v of channel c. */
  normalized_levels: number[][];
  cases: ReferenceCase[];
}

export function readClipReference(): ClipReference {
  return JSON.parse(readFileSync(new URL('../fixtures/clip-preprocess-reference.json', import.meta.url), 'utf8')) as ClipReference;
}

/** The generator's `test_image`: gradients in R and G; B noise, a checkerboard and a blend by quadrant. */
export function referenceInput(width: number, height: number): Rgb8 {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const r = Math.floor((x * 255) / Math.max(1, width - 1));
      const g = Math.floor((y * 255) / Math.max(1, height - 1));
      let h = (Math.imul(x, 73856093) ^ Math.imul(y, 19349663)) >>> 0;
      h = Math.imul(h, 2654435761) >>> 0;
      let b: number;
      if (x < width >> 1 && y < height >> 1) b = h >>> 24;
      else if (x >= width >> 1 && y >= height >> 1) b = (Math.floor(x / 8) + Math.floor(y / 8)) % 2 === 0 ? 255 : 0;
      else b = (r + g) >> 1;
      data.set([r, g, b], (y * width + x) * 3);
    }
  }
  return { width, height, data };
}

/** The 8-bit crop Pillow produced for a case. */
export async function referenceCrop(c: ReferenceCase): Promise<Rgb8> {
  const { data, info } = await sharp(Buffer.from(c.crop_png_base64, 'base64')).raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`${c.name}: expected an RGB PNG, got ${info.channels} channels`);
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Reference pixel_values (float32, CHW) from the crop and the level table. */
export function referencePixelValues(crop: Rgb8, levels: number[][]): Float32Array {
  const plane = crop.width * crop.height;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) out[c * plane + i] = levels[c]![crop.data[3 * i + c]!]!;
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}
