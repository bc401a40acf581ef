import { describe, expect, it } from 'vitest';
import { NumpyRandomState, randn } from '../worker/pipeline/randn.js';

// Reference values: numpy's legacy `np.random.RandomState(seed).randn(...)`.
const FIRST_GAUSSIANS: Record<number, number[]> = {
  0: [1.764052345967664, 0.4001572083672233, 0.9787379841057392, 2.240893199201458],
  42: [0.4967141530112327, -0.13826430117118466, 0.6476885381006925, 1.5230298564080254],
  1: [1.6243453636632417, -0.6117564136500754, -0.5281717522634557, -1.0729686221561705],
};

describe('NumpyRandomState', () => {
  for (const [seed, expected] of Object.entries(FIRST_GAUSSIANS)) {
    it(`gauss() reproduces RandomState(${seed}).randn in float64`, () => {
      const state = new NumpyRandomState(Number(seed));
      for (const value of expected) {
        expect(Math.abs(state.gauss() - value)).toBeLessThanOrEqual(1e-15);
      }
    });

    it(`randn(${seed}, [4]) is the float32 cast of the same values`, () => {
      expect(Array.from(randn(Number(seed), [4]))).toEqual(expected.map(Math.fround));
    });
  }

  it('seeds MT19937 with init_genrand: the first 32-bit output for seed 5489 is 3499211612', () => {
    // 5489 is the reference implementation's default seed; its first output is the classic check
    expect(new NumpyRandomState(5489).nextUint32()).toBe(3499211612);
  });

  it('builds random_sample doubles from two 32-bit draws', () => {
    const words = new NumpyRandomState(0);
    const a = words.nextUint32() >>> 5;
    const b = words.nextUint32() >>> 6;
    // np.random.RandomState(0).random_sample() == 0.5488135039273248
    expect(new NumpyRandomState(0).randomSample()).toBe((a * 67108864 + b) / 9007199254740992);
    expect(new NumpyRandomState(0).randomSample()).toBe(0.5488135039273248);
  });

  it('continues the stream across randn calls, including the cached second Gaussian', () => {
    const state = new NumpyRandomState(0);
    expect(Array.from(state.randn(3))).toEqual(FIRST_GAUSSIANS[0]!.slice(0, 3).map(Math.fround));
    // the 4th value was the spare of the 2nd polar pair; the 5th starts a new pair
    expect(Array.from(state.randn(2))).toEqual([2.240893199201458, 1.8675579901499675].map(Math.fround));
  });

  it('randnInto fills a buffer with the same stream, continuing across odd counts', () => {
    const whole = new NumpyRandomState(42).randn(7);
    const parts = new NumpyRandomState(42);
    const buffer = new Float32Array(7);
    parts.randnInto(buffer.subarray(0, 3)); // ends holding the second Gaussian of a pair
    parts.randnInto(buffer.subarray(3));
    expect(Array.from(buffer)).toEqual(Array.from(whole));
  });

  it('matches numpy past the first state regeneration (624 words)', () => {
    // np.random.RandomState(7).randn(1, 4, 64, 64).astype(np.float32).ravel()[[0, 1, 623, 624, 1000, 16383]]
    const values = randn(7, [1, 4, 64, 64]);
    expect(values.length).toBe(16384);
    const picked = [0, 1, 623, 624, 1000, 16383].map((i) => values[i]);
    expect(picked).toEqual([
      1.6905256509780884, -0.46593737602233887, -1.3850070238113403, 0.5589443445205688, 0.8848879337310791,
      -0.32877686619758606,
    ]);
  });

  it('rejects seeds outside 0 ≤ seed < 2**32 and non-integers', () => {
    expect(() => new NumpyRandomState(-1)).toThrow(RangeError);
    expect(() => new NumpyRandomState(2 ** 32)).toThrow(RangeError);
    expect(() => new NumpyRandomState(1.5)).toThrow(RangeError);
    expect(() => randn(Number.NaN, [1])).toThrow(RangeError);
    expect(() => new NumpyRandomState(2 ** 32 - 1)).not.toThrow();
  });
});

describe('randn', () => {
  it('draws the product of the shape, in C order', () => {
    expect(randn(3, [1, 4, 8, 8]).length).toBe(256);
    expect(randn(3, [2, 3]).length).toBe(6);
    // a shape's layout does not change the stream: [2, 3] and [6] are the same values
    expect(Array.from(randn(3, [2, 3]))).toEqual(Array.from(randn(3, [6])));
    // `randn()` with no dimensions is one value; a zero dimension gives none
    expect(Array.from(randn(0, []))).toEqual([Math.fround(FIRST_GAUSSIANS[0]![0]!)]);
    expect(randn(0, [4, 0]).length).toBe(0);
  });

  it('rejects malformed shapes', () => {
    expect(() => randn(0, [2, -1])).toThrow(RangeError);
    expect(() => randn(0, [2.5])).toThrow(RangeError);
  });

  it('is deterministic per seed and differs between seeds', () => {
    const a = randn(1234, [1, 4, 16, 16]);
    const b = randn(1234, [1, 4, 16, 16]);
    const c = randn(1235, [1, 4, 16, 16]);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });

  it('looks standard normal over many draws', () => {
    const values = randn(99, [100_000]);
    let sum = 0;
    let sumSq = 0;
    for (const v of values) {
      sum += v;
      sumSq += v * v;
    }
    const mean = sum / values.length;
    expect(Math.abs(mean)).toBeLessThan(0.02);
    expect(Math.abs(sumSq / values.length - mean * mean - 1)).toBeLessThan(0.02);
  });
});

describe('NumpyRandomState.randnInto', () => {
  it('draws what gauss() draws one at a time, across twists and a kept spare', () => {
    for (const seed of [0, 42, 4294967295]) {
      const bulk = new NumpyRandomState(seed);
      const single = new NumpyRandomState(seed);
      // odd lengths leave a spare; 623–625 cross the 624-word state boundary mid-pair
      for (const count of [1, 3, 623, 624, 625, 2, 5000, 0, 7]) {
        const fast = bulk.randn(count);
        const slow = Float32Array.from({ length: count }, () => single.gauss());
        expect(Buffer.from(fast.buffer).equals(Buffer.from(slow.buffer))).toBe(true);
        expect(bulk.nextUint32()).toBe(single.nextUint32());
      }
    }
  });
});
