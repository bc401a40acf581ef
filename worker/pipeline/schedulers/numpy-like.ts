/**
 * The few numpy and torch array functions diffusers' schedulers are written with, reproduced
 * with the same arithmetic (float64 unless noted) so timesteps and sigmas come out bit-equal,
 * including where rounding ties and float32 casts decide a value.
 */

/** `np.round` / `np.rint`: round half to even. */
export function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** `np.linspace(start, stop, num, endpoint)` in float64: `i * step + start`, the last exactly `stop`. */
export function linspace(start: number, stop: number, num: number, endpoint = true): number[] {
  const div = endpoint ? num - 1 : num;
  const delta = stop - start;
  const step = div > 0 ? delta / div : Number.NaN;
  const out: number[] = [];
  for (let i = 0; i < num; i++) {
    // numpy divides first when the step underflows to zero, and multiplies by delta alone when
    // there is no division (num 1 with endpoint: [start]); same values otherwise
    if (div <= 0) out.push(i * delta + start);
    else out.push(step === 0 ? (i / div) * delta + start : i * step + start);
  }
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/**
 * `np.arange(start, stop, step)` for float steps: length `ceil((stop - start) / step)`, and
 * numpy fills element i as `start + i * delta` with `delta = (start + step) - start`.
 */
export function arange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const out: number[] = [];
  if (length === 0) return out;
  out.push(start);
  if (length === 1) return out;
  const second = start + step;
  const delta = second - start;
  out.push(second);
  for (let i = 2; i < length; i++) out.push(start + i * delta);
  return out;
}

/** `np.interp(x, xp, fp)` for increasing `xp`, clamping outside the range like numpy. */
export function interp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const n = xp.length;
  const first = xp[0] as number;
  const last = xp[n - 1] as number;
  if (x <= first) return fp[0] as number;
  if (x >= last) return fp[n - 1] as number;
  // binary search for j with xp[j] <= x < xp[j + 1]
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if ((xp[mid] as number) <= x) lo = mid;
    else hi = mid;
  }
  const x0 = xp[lo] as number;
  const y0 = fp[lo] as number;
  if (x === x0) return y0;
  const slope = ((fp[lo + 1] as number) - y0) / ((xp[lo + 1] as number) - x0);
  return slope * (x - x0) + y0;
}

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU: a float32 step, the first
 * half counted up from `start` and the second half down from `end`, each value one fused
 * multiply-add (`start + step·i` rounded once), as torch's compiled kernel does.
 */
export function torchLinspaceFloat32(start: number, end: number, steps: number): Float32Array {
  const f = Math.fround;
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const out = new Float32Array(steps);
  // step·i is exact in float64 (24 + 10 bits), so one rounding to float32 mirrors the FMA
  for (let i = 0; i < steps; i++) out[i] = i < halfway ? s + step * i : e - step * (steps - i - 1);
  if (steps === 1) out[0] = s;
  return out;
}

/** `torch.cumprod` on a CPU float32 tensor: accumulates in double, stores each prefix as float32. */
export function cumprodFloat32(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  let acc = 1;
  for (let i = 0; i < values.length; i++) {
    acc *= values[i] as number;
    out[i] = acc;
  }
  return out;
}
