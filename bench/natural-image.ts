/**
 * A deterministic RGB image that compresses like a generated picture, for benchmarks that encode
 * images without running a model. Noise compresses worse than any picture and a flat gradient far
 * better, so PNG timings on either would mislead; this one layers smooth shapes over a few octaves
 * of value noise and a grain, which puts its PNG size between half and four fifths of the raw size,
 * where generated pictures land.
 */

/** mulberry32: a small seeded generator, enough for test pictures. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Bilinear value noise: a `cells`×`cells` lattice of random values stretched over the image. */
function valueNoise(width: number, height: number, cells: number, next: () => number): Float32Array {
  const lattice = Float32Array.from({ length: (cells + 1) * (cells + 1) }, next);
  const out = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    const fy = (y / height) * cells;
    const y0 = Math.floor(fy);
    const ty = fy - y0;
    const sy = ty * ty * (3 - 2 * ty);
    for (let x = 0; x < width; x++) {
      const fx = (x / width) * cells;
      const x0 = Math.floor(fx);
      const tx = fx - x0;
      const sx = tx * tx * (3 - 2 * tx);
      const i = y0 * (cells + 1) + x0;
      const top = lattice[i]! + (lattice[i + 1]! - lattice[i]!) * sx;
      const bottom = lattice[i + cells + 1]! + (lattice[i + cells + 2]! - lattice[i + cells + 1]!) * sx;
      out[y * width + x] = top + (bottom - top) * sy;
    }
  }
  return out;
}

/**
 * `smooth`: soft shapes (PNG about 0.6 of raw at 512 px); `grainy`: more fine detail and film grain,
 * a harder case (about 0.8).
 */
export type Texture = 'smooth' | 'grainy';

/** Interleaved 8-bit RGB (HWC), `width`×`height`, the same bytes for the same arguments. */
export function naturalImage(width: number, height: number, texture: Texture = 'smooth', seed = 1): Uint8Array {
  const next = random(seed);
  // Per channel: broad shapes, mid detail, fine texture (octave amplitudes fall with frequency).
  const octaves = [3, 12, 40, 96].map((cells) => [0, 1, 2].map(() => valueNoise(width, height, cells, next)));
  const weights = texture === 'smooth' ? [0.68, 0.24, 0.07, 0.01] : [0.55, 0.25, 0.13, 0.07];
  const grain = texture === 'smooth' ? 0.9 : 6;
  const base = [0.5 + 0.3 * next(), 0.45 + 0.3 * next(), 0.4 + 0.3 * next()];
  const out = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    const y = Math.floor(p / width) / height;
    for (let c = 0; c < 3; c++) {
      let v = 0;
      for (let o = 0; o < octaves.length; o++) v += weights[o]! * octaves[o]![c]![p]!;
      // A vertical light falloff, as in most scenes, and a grain of ±grain/2 levels.
      const value = (0.35 + 0.9 * v) * (base[c]! + 0.35 * (1 - y)) * 255 + (next() - 0.5) * grain;
      out[p * 3 + c] = Math.max(0, Math.min(255, Math.round(value)));
    }
  }
  return out;
}
