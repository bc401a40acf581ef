/**
 * The WebAssembly kernels against the plain formulas they stand for: bit for bit, through both
 * ways of calling them (arrays in a kernel arena, used in place, and ordinary arrays, copied),
 * and the committed binary against its source.
 */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { compileKernels, KERNELS_WASM, KERNELS_WAT } from '../scripts/build-kernels.js';
import {
  allocateBeside,
  applyGuidance,
  ArenaPool,
  axpby,
  ddimStep,
  divide,
  dpmDataFromEpsilon,
  dpmUpdate,
  eulerStep,
  epsilonUpdate,
  KernelArena,
  lcmDenoise,
  plmsStep,
  rgbFloats,
  toRgb8,
} from '../worker/pipeline/kernels/index.js';

const f = Math.fround;

/** Deterministic float32 values in [−scale, scale) (xorshift32). */
function values(count: number, seed: number, scale = 3): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/** Positions where two arrays differ (NaN equals NaN). */
function differences(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
  expect(a.length).toBe(b.length);
  const at: number[] = [];
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i]) && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) at.push(i);
  return at;
}

/** The same values as an ordinary array and as an arena array. */
function both(source: Float32Array, arena: KernelArena): [Float32Array, Float32Array] {
  const inArena = arena.allocate(source.length);
  inArena.set(source);
  return [Float32Array.from(source), inArena];
}

// The formulas as the loops before the kernels computed them: double arithmetic, stored as float32.
const guidanceRef = (u: number, c: number, s: number) => u + s * (c - u);
const plmsRef: Record<number, (e: number[]) => number> = {
  1: ([e1]) => e1!,
  2: ([e1, e2]) => f((3 * e1! - e2!) / 2),
  3: ([e1, e2, e3]) => f((23 * e1! - 16 * e2! + 5 * e3!) / 12),
  4: ([e1, e2, e3, e4]) => f((1 / 24) * (55 * e1! - 59 * e2! + 37 * e3! - 9 * e4!)),
};

/** diffusers' `((x / 2 + 0.5).clip(0, 1) * 255).round().astype(uint8)`, each op in float32. */
function level(x: number): number {
  let v = f(f(x / 2) + 0.5);
  if (!(v > 0)) v = 0; // NaN and negatives
  if (v > 1) v = 1;
  const w = f(v * 255);
  const floor = Math.floor(w);
  const fraction = w - floor;
  return fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
}

describe('kernels.wasm', () => {
  it('is what kernels.wat compiles to (run `npm run build:kernels` after editing the source)', async () => {
    const compiled = await compileKernels(await readFile(KERNELS_WAT, 'utf8'));
    const committed = await readFile(KERNELS_WASM);
    expect(Buffer.from(compiled).equals(committed)).toBe(true);
  });
});

describe('applyGuidance', () => {
  for (const n of [16384, 37, 4]) {
    it(`equals u + s·(c − u) in double rounded to float32, n = ${n}, in an arena and copied`, () => {
      const prediction = values(2 * n, n);
      const scale = 7.5;
      const expected = new Float32Array(n);
      for (let i = 0; i < n; i++) expected[i] = guidanceRef(prediction[i]!, prediction[n + i]!, scale);
      const arena = new KernelArena([2 * n, n]);
      const [plain, inArena] = both(prediction, arena);
      expect(differences(applyGuidance(plain, scale, new Float32Array(n)), expected)).toEqual([]);
      expect(differences(applyGuidance(inArena, scale, arena.allocate(n)), expected)).toEqual([]);
    });
  }

  it('rejects a prediction that is not two rows of the output', () => {
    expect(() => applyGuidance(new Float32Array(10), 2, new Float32Array(4))).toThrow(/prediction has 10 values/);
  });
});

describe('plmsStep', () => {
  const sampleCoeff = 1.0123456789;
  const epsCoeff = 0.0345678901;

  for (const order of [1, 2, 3, 4]) {
    for (const n of [16384, 38]) {
      it(`order ${order}, n = ${n}: ε′ rounded to float32, then sc·x − ec·ε′, bit for bit`, () => {
        const eps = Array.from({ length: order }, (_, k) => values(n, 100 * order + k + n));
        const sample = values(n, 7 + n, 20);
        const expected = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          const e = plmsRef[order]!(eps.map((a) => a[i]!));
          expected[i] = sampleCoeff * sample[i]! - epsCoeff * e;
        }
        // copied: ordinary arrays, the result into a separate array
        const out = new Float32Array(n);
        plmsStep(eps, sample, out, sampleCoeff, epsCoeff);
        expect(differences(out, expected)).toEqual([]);
        // in place: arena arrays, the result over the sample itself (as the pipeline steps it)
        const arena = new KernelArena(Array<number>(order + 1).fill(n));
        const arenaEps = eps.map((e) => both(e, arena)[1]);
        const arenaSample = both(sample, arena)[1];
        plmsStep(arenaEps, arenaSample, arenaSample, sampleCoeff, epsCoeff);
        expect(differences(arenaSample, expected)).toEqual([]);
      });
    }
  }

  it('is formula (9) alone as epsilonUpdate', () => {
    const [x, e] = [values(20, 1), values(20, 2)];
    const out = new Float32Array(20);
    epsilonUpdate(x, e, out, 2, 0.5);
    expect(differences(out, x.map((v, i) => 2 * v - 0.5 * e[i]!))).toEqual([]);
  });

  it('copies instead of computing in place when arena arrays partly overlap or end mid-block', () => {
    // out starts 4 values into the sample: in place, a block's store would overwrite sample
    // values a later block still reads
    const arena = new KernelArena([24, 16, 16]);
    const block = arena.allocate(24);
    block.set(values(24, 9));
    const e1 = arena.allocate(16);
    e1.set(values(16, 10));
    const sample = block.subarray(0, 16);
    const out = block.subarray(4, 20);
    const expected = Float32Array.from(sample, (v, i) => 1.5 * v - 0.25 * e1[i]!);
    plmsStep([e1], sample, out, 1.5, 0.25);
    expect(differences(out, expected)).toEqual([]);

    // 6 values: in place, the kernel's second block would write 2 values into the neighbour
    const pair = arena.allocate(16);
    pair.set(values(16, 11));
    const [x6, out6, neighbour] = [pair.subarray(0, 6), pair.subarray(8, 14), [...pair.subarray(14, 16)]];
    const expected6 = Float32Array.from(x6, (v, i) => 2 * v - 0.5 * e1[i]!);
    plmsStep([e1.subarray(0, 6)], x6, out6, 2, 0.5);
    expect(differences(out6, expected6)).toEqual([]);
    expect([...pair.subarray(14, 16)]).toEqual(neighbour);
  });

  it('takes one to four ε of the sample’s length', () => {
    const x = new Float32Array(8);
    expect(() => plmsStep([], x, x, 1, 1)).toThrow(/1 to 4/);
    expect(() => plmsStep([x, x, x, x, x], x, x, 1, 1)).toThrow(/1 to 4/);
    expect(() => plmsStep([new Float32Array(4)], x, x, 1, 1)).toThrow(/eps\[0\] has 4 values/);
  });
});

describe('Euler kernels', () => {
  const c = { cSkip: 0.8123, cOut: -3.217, sigma: 3.1415, dt: -0.4567 };

  for (const n of [16384, 38]) {
    it(`euler and euler ancestral equal the loops' double arithmetic, n = ${n}, copied and in place`, () => {
      const [x, m, z] = [values(n, 11, 14), values(n, 12), values(n, 13)];
      const sigmaUp = 0.377;
      const plain = new Float32Array(n);
      const ancestral = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const x0 = c.cSkip * x[i]! + c.cOut * m[i]!;
        const d = (x[i]! - x0) / c.sigma;
        plain[i] = x[i]! + d * c.dt;
        ancestral[i] = x[i]! + d * c.dt + z[i]! * sigmaUp;
      }
      const out = new Float32Array(n);
      eulerStep(x, m, out, c);
      expect(differences(out, plain)).toEqual([]);
      eulerStep(x, m, out, c, { z, sigmaUp });
      expect(differences(out, ancestral)).toEqual([]);

      const arena = new KernelArena([n, n, n]);
      const [ax, am, az] = [both(x, arena)[1], both(m, arena)[1], both(z, arena)[1]];
      eulerStep(ax, am, ax, c, { z: az, sigmaUp });
      expect(differences(ax, ancestral)).toEqual([]);
    });

    it(`divide equals x / d in double, n = ${n}`, () => {
      const x = values(n, 21, 10);
      const d = Math.fround(Math.sqrt(Math.fround(Math.fround(14.6 * 14.6) + 1)));
      expect(differences(divide(x, d, new Float32Array(n)), x.map((v) => v / d))).toEqual([]);
    });
  }
});

describe('DPM-Solver kernels', () => {
  for (const n of [16384, 38]) {
    it(`data prediction, first and second order equal the loops' arithmetic, n = ${n}`, () => {
      const [x, m, m0, m1] = [values(n, 31, 14), values(n, 32), values(n, 33), values(n, 34)];
      const [sigma, alpha, sc, c0, c1, r0] = [0.9876, 0.1567, 0.8765, -0.2345, 0.1234, 0.7531];
      const x0 = x.map((v, i) => (v - sigma * m[i]!) / alpha);
      // the loops added a zero noise term: −0 becomes +0 there and here
      const first = x.map((v, i) => sc * v + c0 * m0[i]! + 0);
      const second = x.map((v, i) => sc * v + c0 * m0[i]! + c1 * ((1 / r0) * (m0[i]! - m1[i]!)) + 0);
      expect(differences(dpmDataFromEpsilon(x, m, new Float32Array(n), sigma, alpha), x0)).toEqual([]);
      const out = new Float32Array(n);
      dpmUpdate(x, m0, undefined, out, { sampleCoeff: sc, d0Coeff: c0 });
      expect(differences(out, first)).toEqual([]);
      dpmUpdate(x, m0, m1, out, { sampleCoeff: sc, d0Coeff: c0, d1Coeff: c1, r0 });
      expect(differences(out, second)).toEqual([]);
      // (−1)·0 + 1·(−0) is −0; with the zero term it is +0
      dpmUpdate(new Float32Array(n), new Float32Array(n).fill(-0), undefined, out, { sampleCoeff: -1, d0Coeff: 1 });
      expect(out.every((v) => Object.is(v, 0))).toBe(true);
    });
  }
});

describe('DDIM and LCM kernels', () => {
  const [sqrtAlpha, sqrtBeta, sqrtAlphaPrev, directionCoeff] = [0.3456, 0.9384, 0.5678, 0.8232];
  const clip = (v: number, range: number) => Math.min(Math.max(v, -range), range);

  for (const clipRange of [Infinity, 1]) {
    it(`DDIM for ε and v, LCM's denoiser and a·x + b·y equal the loops, clip range ${clipRange}`, () => {
      const n = 16384;
      const [x, m, z] = [values(n, 41, 4), values(n, 42, 4), values(n, 43)];
      x.set([NaN, -0, 0], 0);
      const ddimEps = x.map((v, i) => {
        const x0 = (v - sqrtBeta * m[i]!) / sqrtAlpha;
        return sqrtAlphaPrev * (clipRange === Infinity ? x0 : clip(x0, clipRange)) + directionCoeff * m[i]!;
      });
      const ddimV = x.map((v, i) => {
        const x0 = sqrtAlpha * v - sqrtBeta * m[i]!;
        const eps = sqrtAlpha * m[i]! + sqrtBeta * v;
        return sqrtAlphaPrev * (clipRange === Infinity ? x0 : clip(x0, clipRange)) + directionCoeff * eps;
      });
      const [cOut, cSkip] = [0.9876, 0.0123];
      const lcm = x.map((v, i) => {
        const x0 = (v - sqrtBeta * m[i]!) / sqrtAlpha;
        return cOut * (clipRange === Infinity ? x0 : clip(x0, clipRange)) + cSkip * v;
      });
      const c = { sqrtAlpha, sqrtBeta, clipRange, sqrtAlphaPrev, directionCoeff };
      const out = new Float32Array(n);
      ddimStep(x, m, out, 'epsilon', c);
      expect(differences(out, ddimEps)).toEqual([]);
      ddimStep(x, m, out, 'v_prediction', c);
      expect(differences(out, ddimV)).toEqual([]);
      lcmDenoise(x, m, out, { sqrtAlpha, sqrtBeta, clipRange, cOut, cSkip });
      expect(differences(out, lcm)).toEqual([]);
      axpby(0.25, x, -1.5, z, out);
      expect(differences(out, x.map((v, i) => 0.25 * v + -1.5 * z[i]!))).toEqual([]);
    });
  }
});

describe('toRgb8', () => {
  it('computes diffusers’ float32 conversion, clamping, NaN → 0, half to even', () => {
    const pixels = 512 * 512;
    const planes = values(3 * pixels, 3, 1.2);
    const special = [NaN, Infinity, -Infinity, -0, 0, -1, 1, 1.5, -1.5, 2 ** -140];
    planes.set(special, 0);
    // Ties: x whose scaled value is exactly k + 0.5 in float32, for as many k as exist
    const ties: number[] = [];
    for (let k = 0; k < 255; k++) {
      const v = f((k + 0.5) / 255);
      const x = f((v - 0.5) * 2);
      if (f(f(x / 2) + 0.5) === v && f(v * 255) === k + 0.5) ties.push(x);
    }
    expect(ties.length).toBeGreaterThan(20);
    planes.set(ties, pixels); // into the green plane
    const expected = new Uint8Array(3 * pixels);
    for (let p = 0; p < pixels; p++) {
      for (let c = 0; c < 3; c++) expected[3 * p + c] = level(planes[c * pixels + p]!);
    }
    expect(differences(toRgb8(planes, pixels), expected)).toEqual([]);
    // both directions of rounding occur among the ties
    const tieLevels = ties.map((x) => level(x) - (f(f(f(x / 2) + 0.5) * 255) - 0.5));
    expect(new Set(tieLevels)).toEqual(new Set([0, 1]));

    const arena = new KernelArena([3 * pixels, rgbFloats(pixels)]);
    const inArena = both(planes, arena)[1];
    expect(differences(toRgb8(inArena, pixels, arena), expected)).toEqual([]);
  });

  it('handles a pixel count that is not a multiple of 4', () => {
    const pixels = 37;
    const planes = values(3 * pixels, 5, 1.1);
    const expected = Array.from({ length: 3 * pixels }, (_, i) => level(planes[(i % 3) * pixels + Math.floor(i / 3)]!));
    expect([...toRgb8(planes, pixels)]).toEqual(expected);
  });
});

describe('KernelArena', () => {
  it('hands out zeroed, 16-byte aligned arrays, then ordinary ones once full', () => {
    const arena = new KernelArena([10, 10]);
    const a = arena.allocate(10);
    const b = arena.allocate(10);
    expect(a.buffer).toBe(b.buffer);
    expect([a.byteOffset % 16, b.byteOffset % 16]).toEqual([0, 0]);
    expect(b.byteOffset).toBeGreaterThanOrEqual(a.byteOffset + a.byteLength);
    expect([...a, ...b].every((v) => v === 0)).toBe(true);
    const big = arena.allocate(100_000);
    expect(big.buffer).not.toBe(a.buffer);
    expect(big.length).toBe(100_000);
  });

  it('places state beside arena arrays, and ordinary arrays beside ordinary ones', () => {
    const arena = new KernelArena([8, 8]);
    const a = arena.allocate(8);
    expect(allocateBeside(a, 8).buffer).toBe(a.buffer);
    const plain = new Float32Array(8);
    expect(allocateBeside(plain, 8).buffer).not.toBe(plain.buffer);
    expect(allocateBeside(undefined, 3)).toHaveLength(3);
  });

  it('is reused through a pool: the same memory serves the next generation, zeroed by allocate', async () => {
    const pool = new ArenaPool();
    let first: ArrayBufferLike | undefined;
    await pool.use([64], async (arena) => {
      const a = arena.allocate(64);
      a.fill(7);
      first = a.buffer;
    });
    await pool.use([64], async (arena) => {
      const a = arena.allocate(64);
      expect(a.buffer).toBe(first);
      expect(a.every((v) => v === 0)).toBe(true);
      // a second arena while the first is in use
      await pool.use([64], async (inner) => expect(inner.allocate(4).buffer).not.toBe(first));
    });
  });
});
