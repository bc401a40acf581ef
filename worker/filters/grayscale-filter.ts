/**
 * Screens out (near-)grayscale images. Measure: per-pixel chroma C = max(R, G, B) − min(R, G, B)
 * on the 8-bit image (the C of HSV/HSL: 0 for every grey, 255 for a pure primary); the score is
 * its 99th percentile, the chroma that only 1 % of the pixels exceed. An image is grayscale when
 * the score is at most `maxChroma` (FILTER_GRAYSCALE_MAX_CHROMA, default 12 of 255).
 *
 * Why these: a grey image scores 0 exactly; what processing adds to a grey image is disagreement
 * between channels (how much a real SD VAE adds on black-and-white content was not measured here:
 * no real model on the build machines): independent channel noise of σ levels
 * scores about 4σ (the 99th percentile of the range of three normals is 4.1σ), so σ = 2.5 scores
 * 10, and a JPEG of a grey image (quality 50…95) scores 0. 12 (4.7 % of full scale) keeps those,
 * and a uniform tint of up to 12 levels, as grayscale, while toned and coloured images score
 * tens of levels (a sepia toning well over 40, a muted colour scene 24). The 99th percentile, not
 * the mean, so that a grey picture with a small coloured object (over 1 % of the pixels) still
 * counts as colour. test/filters.test.ts holds these cases.
 */
import type { RgbImage } from '../pipeline/types.js';
import type { ImageFilter } from './types.js';

export const DEFAULT_GRAYSCALE_MAX_CHROMA = 12;
const PERCENTILE = 0.99;

/** The smallest chroma c such that at least `fraction` of the pixels have chroma ≤ c. */
export function chromaPercentile(image: Pick<RgbImage, 'width' | 'height' | 'data'>, fraction = PERCENTILE): number {
  const pixels = image.width * image.height;
  if (pixels === 0) return 0;
  const histogram = new Uint32Array(256);
  const { data } = image;
  for (let i = 0; i < pixels; i++) {
    const r = data[3 * i]!;
    const g = data[3 * i + 1]!;
    const b = data[3 * i + 2]!;
    histogram[Math.max(r, g, b) - Math.min(r, g, b)]! += 1;
  }
  const needed = Math.ceil(fraction * pixels);
  let seen = 0;
  for (let c = 0; c < 256; c++) {
    seen += histogram[c]!;
    if (seen >= needed) return c;
  }
  return 255;
}

export function grayscaleFilter(maxChroma = DEFAULT_GRAYSCALE_MAX_CHROMA): ImageFilter {
  return {
    name: 'grayscale',
    check(image) {
      const score = chromaPercentile(image);
      const grayscale = score <= maxChroma;
      return {
        passed: !grayscale,
        score,
        threshold: maxChroma,
        ...(grayscale ? { detail: `99th-percentile chroma ${score} ≤ ${maxChroma}: the image is (near-)grayscale` } : {}),
      };
    },
  };
}
