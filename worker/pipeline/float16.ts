/**
 * IEEE 754 binary16 ↔ binary32 conversion on raw bits (`Uint16Array`), since Node 20 has no
 * `Float16Array`. float16 models take and give float16 tensors; the pipeline computes in
 * float32 and converts at the session boundary.
 *
 * - float16 → float32 is exact: a 65 536-entry lookup table built on first use (256 KiB).
 * - float32 → float16 rounds to nearest, ties to even (numpy's `astype(np.float16)`), with
 *   subnormals, overflow to ±Inf and NaN kept NaN (a port of numpy's `npy_floatbits_to_halfbits`).
 */

const scratch = new ArrayBuffer(4);
const scratchF32 = new Float32Array(scratch);
const scratchU32 = new Uint32Array(scratch);

/** float32 bit pattern → float16 bit pattern, round to nearest even. */
export function halfBitsFromFloatBits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exp = f & 0x7f800000;

  // Exponent ≥ 16: overflow to ±Inf, or Inf / NaN already.
  if (exp >= 0x47800000) {
    if (exp === 0x7f800000) {
      const mantissa = f & 0x007fffff;
      // Keep the NaN's payload's top bits; make sure it stays a NaN (never Inf).
      if (mantissa !== 0) return sign | 0x7c00 | (mantissa >>> 13) | ((mantissa >>> 13) === 0 ? 1 : 0);
    }
    // |x| ≥ 65536 (values in [65520, 65536) overflow by rounding in the normal path below).
    return sign | 0x7c00;
  }

  // Exponent underflow: a float16 subnormal or zero.
  if (exp <= 0x38000000) {
    // Smaller than half the smallest subnormal (2^-25): rounds to ±0.
    if (exp < 0x33000000) return sign;
    const e = exp >>> 23;
    let sig = 0x00800000 + (f & 0x007fffff);
    // Bits shifted out below the half ulp decide ties; keep them for the sticky test.
    const shift = 113 - e;
    const lost = sig & ((1 << shift) - 1);
    sig >>>= shift;
    // Round half to even: add half an ulp unless exactly a tie with an even result.
    if ((sig & 0x3fff) !== 0x1000 || lost !== 0) sig += 0x1000;
    // A carry into the exponent turns the largest subnormal into the smallest normal: correct.
    return sign | (sig >>> 13);
  }

  // Normal range.
  const halfExp = (exp - 0x38000000) >>> 13;
  let sig = f & 0x007fffff;
  if ((sig & 0x3fff) !== 0x1000) sig += 0x1000;
  // A carry out of the mantissa increments the exponent (possibly to Inf): correct.
  return sign | (halfExp + (sig >>> 13));
}

/** One float32 number → float16 bits. */
export function toFloat16Bits(value: number): number {
  scratchF32[0] = value;
  return halfBitsFromFloatBits(scratchU32[0]!);
}

let halfToFloatTable: Float32Array | undefined;

function buildHalfToFloatTable(): Float32Array {
  const table = new Float32Array(65536);
  const bits = new Uint32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mantissa = h & 0x03ff;
    if (exp === 0) {
      // ±0 or subnormal: mantissa × 2^-24, exact in float32.
      table[h] = (sign ? -1 : 1) * mantissa * 2 ** -24;
    } else if (exp === 0x1f) {
      bits[h] = sign | 0x7f800000 | (mantissa << 13);
    } else {
      bits[h] = sign | ((exp + 112) << 23) | (mantissa << 13);
    }
  }
  return table;
}

function table(): Float32Array {
  halfToFloatTable ??= buildHalfToFloatTable();
  return halfToFloatTable;
}

/** float16 bits → the float32 number they denote (exact). */
export function fromFloat16Bits(bits: number): number {
  return table()[bits & 0xffff]!;
}

/** Converts float32 values to float16 bits, into `out` when given. */
export function float32ToFloat16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  if (out.length < src.length) throw new RangeError('float32ToFloat16: output is shorter than input');
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const f = bits[i]!;
    const exp = f & 0x7f800000;
    // Fast path for the normal range (the common case for activations and latents).
    if (exp > 0x38000000 && exp < 0x47000000) {
      let sig = f & 0x007fffff;
      if ((sig & 0x3fff) !== 0x1000) sig += 0x1000;
      out[i] = ((f >>> 16) & 0x8000) | (((exp - 0x38000000) >>> 13) + (sig >>> 13));
    } else {
      out[i] = halfBitsFromFloatBits(f);
    }
  }
  return out;
}

/** Converts float16 bits to float32 values, into `out` when given. */
export function float16ToFloat32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  if (out.length < src.length) throw new RangeError('float16ToFloat32: output is shorter than input');
  const lookup = table();
  for (let i = 0; i < src.length; i++) out[i] = lookup[src[i]!]!;
  return out;
}
