import sharp, { type PngOptions } from 'sharp';
import { DEFAULT_OUTPUT_QUALITY, OUTPUT_MEDIA, type OutputFormat } from '../shared/output-format.js';
import type { RgbImage } from './pipeline/types.js';

/**
 * Lossless PNG settings, chosen from `npm run bench:encoding` (README, "Output formats"): with
 * adaptive filtering (PNG's per-row prediction, off in sharp by default) a picture takes about half
 * the bytes, and zlib level 3 (the last of its fast levels) comes within 10 % of level 6's size at
 * about the time level 6 took without filtering. Palette quantisation (and with it sharp's
 * `effort`) stays off: it changes pixels.
 */
export const OUTPUT_DEFAULTS = {
  png: { compressionLevel: 3, adaptiveFiltering: true, palette: false } satisfies PngOptions,
} as const;

export interface EncodedImage {
  bytes: Buffer;
  contentType: string;
  /** The stored key's extension. */
  extension: string;
}

/** Raw RGB → the requested format; `quality` (1–100) applies to webp and jpeg. */
export async function encodeImage(image: RgbImage, output: { format?: OutputFormat | undefined; quality?: number | undefined } = {}): Promise<EncodedImage> {
  const format = output.format ?? 'png';
  const pipeline = sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
    raw: { width: image.width, height: image.height, channels: 3 },
  });
  let encoded;
  switch (format) {
    case 'png':
      encoded = pipeline.png(OUTPUT_DEFAULTS.png);
      break;
    case 'webp':
      encoded = pipeline.webp({ quality: output.quality ?? DEFAULT_OUTPUT_QUALITY });
      break;
    case 'jpeg':
      encoded = pipeline.jpeg({ quality: output.quality ?? DEFAULT_OUTPUT_QUALITY });
      break;
  }
  return { bytes: await encoded.toBuffer(), ...OUTPUT_MEDIA[format] };
}
