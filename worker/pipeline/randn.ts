/**
 * numpy's legacy Gaussian stream, so a seed gives the same initial latents as
 * `np.random.RandomState(seed).randn(*shape).astype(np.float32)` (the ONNX Stable Diffusion
 * pipelines of diffusers draw their latents this way).
 *
 * Mersenne Twister MT19937 (Matsumoto & Nishimura 1998) seeded with `init_genrand`, doubles from
 * two 32-bit draws (`random_sample`), and Marsaglia's polar Box–Muller method with the spare
 * value kept for the next call (numpy's `legacy_gauss`).
 */

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/** The next word from the upper bit of mt[i], the lower 31 of mt[i + 1] and mt[i + M]. */
function recurrence(current: number, next: number, far: number): number {
  const y = (current & UPPER_MASK) | (next & LOWER_MASK);
  return far ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
}

/** MT19937's output tempering of a state word; int32 bits (`>>> 0` for the uint32). */
function temper(word: number): number {
  let y = word ^ (word >>> 11);
  y ^= (y << 7) & 0x9d2c5680;
  y ^= (y << 15) & 0xefc60000;
  return y ^ (y >>> 18);
}

export class NumpyRandomState {
  private readonly mt = new Uint32Array(N);
  private index = N;
  /** legacy_gauss keeps the second value of each pair for the next call. */
  private hasSpare = false;
  private spare = 0;

  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
      throw new RangeError(`seed must be an integer from 0 to 2**32 - 1, got ${seed}`);
    }
    // init_genrand: mt[i] = 1812433253 · (mt[i−1] ⊕ (mt[i−1] >> 30)) + i  (mod 2³²)
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = this.mt[i - 1] as number;
      this.mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0;
    }
  }

  /** The next 32-bit output (genrand_int32), tempered. */
  nextUint32(): number {
    if (this.index >= N) this.twist();
    return temper(this.mt[this.index++] as number) >>> 0;
  }

  /** A double in [0, 1) with 53 random bits: `(a >> 5, b >> 6)` as numpy's `random_sample`. */
  randomSample(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** One standard normal, exactly numpy's `legacy_gauss`. */
  gauss(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    let x1: number;
    let x2: number;
    let r2: number;
    do {
      x1 = 2 * this.randomSample() - 1;
      x2 = 2 * this.randomSample() - 1;
      r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1 || r2 === 0);
    // polar method, a more efficient version of the Box–Muller approach
    const f = Math.sqrt((-2 * Math.log(r2)) / r2);
    // keep one for the next call
    this.spare = f * x1;
    this.hasSpare = true;
    return f * x2;
  }

  /** The next `count` standard normals of this stream, cast to float32. */
  randn(count: number): Float32Array {
    if (!Number.isInteger(count) || count < 0) {
      throw new RangeError(`count must be a non-negative integer, got ${count}`);
    }
    return this.randnInto(new Float32Array(count));
  }

  /**
   * Fills `out` with the next standard normals of this stream, cast to float32: `gauss()` over
   * and over, with the generator's state in locals (the same draws, in the same order).
   */
  randnInto(out: Float32Array): Float32Array {
    const count = out.length;
    let i = 0;
    if (count > 0 && this.hasSpare) {
      this.hasSpare = false;
      out[i++] = this.spare;
    }
    const mt = this.mt;
    let index = this.index;
    while (i < count) {
      let x1: number;
      let x2: number;
      let r2: number;
      do {
        // four tempered words → two doubles (randomSample), inlined
        if (index > N - 4) {
          this.index = index;
          x1 = 2 * this.randomSample() - 1;
          x2 = 2 * this.randomSample() - 1;
          index = this.index;
        } else {
          const a = temper(mt[index] as number);
          const b = temper(mt[index + 1] as number);
          const c = temper(mt[index + 2] as number);
          const d = temper(mt[index + 3] as number);
          index += 4;
          x1 = 2 * (((a >>> 5) * 67108864 + (b >>> 6)) / 9007199254740992) - 1;
          x2 = 2 * (((c >>> 5) * 67108864 + (d >>> 6)) / 9007199254740992) - 1;
        }
        r2 = x1 * x1 + x2 * x2;
      } while (r2 >= 1 || r2 === 0);
      const f = Math.sqrt((-2 * Math.log(r2)) / r2);
      out[i++] = f * x2;
      if (i < count) {
        out[i++] = f * x1;
      } else {
        this.spare = f * x1;
        this.hasSpare = true;
      }
    }
    this.index = index;
    return out;
  }

  /**
   * Regenerates the 624-word state (the MT19937 recurrence), in the reference code's three
   * passes so that no index needs wrapping.
   */
  private twist(): void {
    const mt = this.mt;
    let i = 0;
    // mag01[y & 1] without a branch: −(y & 1) is all ones or zero (a coin flip for a predictor)
    for (; i < N - M; i++) {
      const y = ((mt[i] as number) & UPPER_MASK) | ((mt[i + 1] as number) & LOWER_MASK);
      mt[i] = (mt[i + M] as number) ^ (y >>> 1) ^ (-(y & 1) & MATRIX_A);
    }
    for (; i < N - 1; i++) {
      const y = ((mt[i] as number) & UPPER_MASK) | ((mt[i + 1] as number) & LOWER_MASK);
      mt[i] = (mt[i + M - N] as number) ^ (y >>> 1) ^ (-(y & 1) & MATRIX_A);
    }
    mt[N - 1] = recurrence(mt[N - 1] as number, mt[0] as number, mt[M - 1] as number);
    this.index = 0;
  }
}

/** `np.random.RandomState(seed).randn(*shape).astype(np.float32)`, flattened in C order. */
export function randn(seed: number, shape: readonly number[]): Float32Array {
  let count = 1;
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 0) {
      throw new RangeError(`shape must hold non-negative integers, got [${shape.join(', ')}]`);
    }
    count *= dim;
  }
  return new NumpyRandomState(seed).randn(count);
}
