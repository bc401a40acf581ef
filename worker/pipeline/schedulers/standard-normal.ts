/**
 * Standard normal draws for stochastic steps when the caller passes no noise. Box–Muller on
 * Math.random: not reproducible, which is why the pipeline passes seeded noise instead.
 */
export function standardNormal(count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    // 1 − U keeps the log's argument in (0, 1]
    const radius = Math.sqrt(-2 * Math.log(1 - Math.random()));
    const angle = 2 * Math.PI * Math.random();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

/** The caller's noise, checked against the sample's size, or fresh standard normals. */
export function noiseFor(sample: Float32Array, noise: Float32Array | undefined): Float32Array {
  if (noise === undefined) return standardNormal(sample.length);
  if (noise.length !== sample.length) {
    throw new RangeError(`noise has ${noise.length} values but the sample has ${sample.length}`);
  }
  return noise;
}
