/**
 * The denoising loop's element-wise arithmetic and the image conversion in WebAssembly SIMD
 * (kernels.wat). The loop kernels return, bit for bit, what the plain loops they replace
 * returned; the image conversion follows diffusers' float32 numpy arithmetic. They exist because
 * V8's scalar float32 loops cost 2–5 ns a value on a small server core, which over a 512 px
 * latent (16k values, several passes a step) and its 786k-value image made the JavaScript around
 * ONNX Runtime a visible share of a tiny model's time. Right after a session run the caches hold
 * ONNX Runtime's data, not ours, so what a step costs is mostly how much memory it touches: the
 * loop's arrays stay in one reused block, and results go straight where the next run reads them.
 *
 * A kernel reads and writes WebAssembly memory. Arrays allocated from a `KernelArena` already
 * live there and are used in place; any other array is copied into a shared scratch memory and
 * the result copied back (a memcpy, still far cheaper than the scalar loop). Calls run to
 * completion synchronously, so the one scratch memory serves every caller in the process.
 */
import { readFileSync } from 'node:fs';

interface KernelExports {
  guidance(u: number, c: number, out: number, n: number, scale: number): void;
  // PLMS of each order: the ε offsets (newest first), then x, out, n, sampleCoeff, epsCoeff
  plms1(e1: number, x: number, out: number, n: number, sc: number, ec: number): void;
  plms2(e1: number, e2: number, x: number, out: number, n: number, sc: number, ec: number): void;
  plms3(e1: number, e2: number, e3: number, x: number, out: number, n: number, sc: number, ec: number): void;
  plms4(e1: number, e2: number, e3: number, e4: number, x: number, out: number, n: number, sc: number, ec: number): void;
  divide(x: number, out: number, n: number, d: number): void;
  euler(x: number, m: number, out: number, n: number, cSkip: number, cOut: number, sigma: number, dt: number): void;
  euler_ancestral(
    x: number,
    m: number,
    z: number,
    out: number,
    n: number,
    cSkip: number,
    cOut: number,
    sigma: number,
    dt: number,
    sigmaUp: number,
  ): void;
  dpm_data_from_eps(x: number, m: number, out: number, n: number, sigma: number, alpha: number): void;
  dpm_first(x: number, m0: number, out: number, n: number, sampleCoeff: number, modelCoeff: number): void;
  dpm_second(
    x: number,
    m0: number,
    m1: number,
    out: number,
    n: number,
    sampleCoeff: number,
    d0Coeff: number,
    d1Coeff: number,
    inverseR0: number,
  ): void;
  // DDIM for ε and for v: x, m, out, n, √β, √α, clip range, √α_prev, √(1 − α_prev)
  ddim_eps(x: number, m: number, out: number, n: number, sb: number, sa: number, range: number, ap: number, dir: number): void;
  ddim_v(x: number, m: number, out: number, n: number, sb: number, sa: number, range: number, ap: number, dir: number): void;
  lcm_denoise(
    x: number,
    m: number,
    out: number,
    n: number,
    sqrtBeta: number,
    sqrtAlpha: number,
    range: number,
    cOut: number,
    cSkip: number,
  ): void;
  axpby(x: number, y: number, out: number, n: number, a: number, b: number): void;
  to_rgb8(src: number, out: number, n: number): void;
}

const PAGE_BYTES = 65536;
/** Kernels load and store 16 bytes (4 float32) at a time. */
const ALIGN = 16;
const LANES = 4;

let compiled: WebAssembly.Module | undefined;

/** A memory with the kernels instantiated over it. */
class KernelMemory {
  readonly memory: WebAssembly.Memory;
  readonly exports: KernelExports;

  constructor(bytes: number) {
    compiled ??= new WebAssembly.Module(readFileSync(new URL('./kernels.wasm', import.meta.url)));
    this.memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(bytes / PAGE_BYTES)) });
    this.exports = new WebAssembly.Instance(compiled, { env: { memory: this.memory } }).exports as unknown as KernelExports;
  }

  /** Grows to at least `bytes` (detaching earlier views of the memory). */
  reserve(bytes: number): void {
    const missing = bytes - this.memory.buffer.byteLength;
    if (missing > 0) this.memory.grow(Math.ceil(missing / PAGE_BYTES));
  }
}

/** The arena each arena buffer belongs to. */
const arenas = new WeakMap<ArrayBufferLike, KernelArena>();

/**
 * A fixed block of WebAssembly memory for the arrays a loop keeps, so kernels work on them in
 * place. It never grows (growing would detach every array handed out); when it is full,
 * `allocate` gives an ordinary array instead, which kernels then copy.
 */
export class KernelArena {
  readonly home: KernelMemory;
  private next = 0;

  /** Room for arrays of `lengths` float32 each (and their alignment). */
  constructor(lengths: readonly number[]) {
    this.home = new KernelMemory(arenaBytes(lengths));
    arenas.set(this.home.memory.buffer, this);
  }

  get capacity(): number {
    return this.home.memory.buffer.byteLength;
  }

  /** A zeroed array of `length` float32, in the arena while it has room. */
  allocate(length: number): Float32Array {
    return this.allocateUnset(length).fill(0);
  }

  /**
   * Like `allocate`, but holding whatever an earlier user of the memory left there: for an array
   * that is written whole before it is read (a session's output, a kernel's result).
   */
  allocateUnset(length: number): Float32Array {
    const end = this.next + paddedBytes(length);
    if (end > this.capacity) return new Float32Array(length);
    const array = new Float32Array(this.home.memory.buffer, this.next, length);
    this.next = end;
    return array;
  }

  /** Takes back every array handed out: their memory is reused by the next `allocate`. */
  reset(): void {
    this.next = 0;
  }
}

/** Bytes an arena needs for arrays of `lengths`. */
function arenaBytes(lengths: readonly number[]): number {
  return lengths.reduce((sum, length) => sum + paddedBytes(length), 0);
}

/**
 * Arenas kept for reuse. Fresh memory costs a page fault per 4 KiB on first touch (about 4 ms
 * for a 512 px image's 4 MB on a small VM, more than the arithmetic), so each generation takes
 * an arena that an earlier one gave back instead of a new one.
 */
export class ArenaPool {
  private readonly free: KernelArena[] = [];

  constructor(private readonly keep = 4) {}

  /** Runs `use` with an arena for arrays of `lengths`; its arrays must not outlive the call. */
  async use<T>(lengths: readonly number[], use: (arena: KernelArena) => Promise<T>): Promise<T> {
    const bytes = arenaBytes(lengths);
    const index = this.free.findIndex((a) => a.capacity >= bytes);
    const arena = index >= 0 ? this.free.splice(index, 1)[0]! : new KernelArena(lengths);
    try {
      return await use(arena);
    } finally {
      arena.reset();
      this.free.unshift(arena);
      this.free.length = Math.min(this.free.length, this.keep);
    }
  }
}

/**
 * A zeroed array of `length` float32 in the arena that holds `beside` (for state kept next to
 * the arrays a kernel reads), or an ordinary one.
 */
export function allocateBeside(beside: Float32Array | undefined, length: number): Float32Array {
  const arena = beside && arenas.get(beside.buffer);
  return arena ? arena.allocate(length) : new Float32Array(length);
}

/** Bytes an array of `length` float32 takes in an arena: whole 16-byte blocks, plus one spare. */
function paddedBytes(length: number): number {
  return (Math.ceil(length / LANES) + 1) * ALIGN;
}

/**
 * Where `arrays` can be used in place: one arena holding all of them, each 16-byte aligned and
 * of whole blocks of 4 values (a kernel's last store must not spill into a neighbour), any two
 * either the same range or disjoint. Else undefined.
 */
function inPlace(arrays: readonly Float32Array[]): KernelMemory | undefined {
  const home = arenas.get(arrays[0]!.buffer)?.home;
  if (!home) return undefined;
  for (const a of arrays) {
    if (a.buffer !== arrays[0]!.buffer || a.byteOffset % ALIGN !== 0 || a.length % LANES !== 0) return undefined;
  }
  for (const a of arrays) {
    for (const b of arrays) {
      const same = a.byteOffset === b.byteOffset && a.length === b.length;
      const disjoint = a.byteOffset + a.byteLength <= b.byteOffset || b.byteOffset + b.byteLength <= a.byteOffset;
      if (!same && !disjoint) return undefined;
    }
  }
  return home;
}

let scratchMemory: KernelMemory | undefined;

/**
 * Lays out one call's copies in the scratch memory: each region holds whole blocks of 4 values
 * (the padding zeroed) and starts 16-byte aligned.
 */
class Scratch {
  readonly home = (scratchMemory ??= new KernelMemory(PAGE_BYTES));
  private next = 0;

  region(length: number): number {
    const offset = this.next;
    this.next += paddedBytes(length);
    this.home.reserve(this.next);
    this.floats().fill(0, offset / 4 + length, this.next / 4);
    return offset;
  }

  copyIn(values: Float32Array): number {
    const offset = this.region(values.length);
    this.floats().set(values, offset / 4);
    return offset;
  }

  copyOut(offset: number, out: Float32Array): void {
    out.set(this.floats().subarray(offset / 4, offset / 4 + out.length));
  }

  floats(): Float32Array {
    return new Float32Array(this.home.memory.buffer);
  }
}

/**
 * Runs a float kernel over `inputs` into `out`: in place when an arena holds them all, else
 * through scratch copies. `run` gets the kernel exports, the inputs' offsets, the output's
 * offset and the value count rounded up to whole blocks.
 */
function runFloatKernel(
  inputs: readonly Float32Array[],
  out: Float32Array,
  run: (kernels: KernelExports, inputs: number[], out: number, n: number) => void,
): void {
  const n = Math.ceil(out.length / LANES) * LANES;
  const home = inPlace([...inputs, out]);
  if (home) {
    run(home.exports, inputs.map((a) => a.byteOffset), out.byteOffset, n);
    return;
  }
  const scratch = new Scratch();
  const offsets = inputs.map((a) => scratch.copyIn(a));
  const o = scratch.region(out.length);
  run(scratch.home.exports, offsets, o, n);
  scratch.copyOut(o, out);
}

function checkLength(name: string, array: Float32Array, length: number): void {
  if (array.length !== length) throw new RangeError(`${name} has ${array.length} values, expected ${length}`);
}

/**
 * Classifier-free guidance over a `[uncond; cond]` batch: ε_u + g·(ε_c − ε_u) into `out`
 * (Ho & Salimans 2022, eq. 6); `prediction` holds twice `out.length` values.
 */
export function applyGuidance(prediction: Float32Array, scale: number, out: Float32Array): Float32Array {
  const n = out.length;
  checkLength('prediction', prediction, 2 * n);
  runFloatKernel([prediction.subarray(0, n), prediction.subarray(n)], out, (k, [u, c], o, count) =>
    k.guidance(u!, c!, o, count, scale),
  );
  return out;
}

/**
 * One PLMS step for ε prediction (Liu et al. 2022, eq. 12 then formula 9): ε′ from `eps`, the
 * newest first (1 to 4 of them: Adams–Bashforth of that order; one is formula 9 alone), rounded
 * to float32, then sampleCoeff·x − epsCoeff·ε′ into `out` (which may be one of the inputs).
 */
export function plmsStep(
  eps: readonly Float32Array[],
  sample: Float32Array,
  out: Float32Array,
  sampleCoeff: number,
  epsCoeff: number,
): void {
  const order = eps.length;
  if (order < 1 || order > 4) throw new RangeError(`PLMS takes 1 to 4 ε, got ${order}`);
  for (let i = 0; i < order; i++) {
    if (eps[i]!.length !== sample.length) checkLength(`eps[${i}]`, eps[i]!, sample.length);
  }
  checkLength('out', out, sample.length);
  const [sc, ec] = [sampleCoeff, epsCoeff];
  runFloatKernel([...eps, sample], out, (k, [a, b, c, d, e], o, n) => {
    if (order === 1) k.plms1(a!, b!, o, n, sc, ec);
    else if (order === 2) k.plms2(a!, b!, c!, o, n, sc, ec);
    else if (order === 3) k.plms3(a!, b!, c!, d!, o, n, sc, ec);
    else k.plms4(a!, b!, c!, d!, e!, o, n, sc, ec);
  });
}

/** PNDM's formula (9) for ε prediction: sampleCoeff·x − epsCoeff·ε into `out`. */
export function epsilonUpdate(
  sample: Float32Array,
  eps: Float32Array,
  out: Float32Array,
  sampleCoeff: number,
  epsCoeff: number,
): void {
  plmsStep([eps], sample, out, sampleCoeff, epsCoeff);
}

/** `sample / divisor` into `out` (the σ schedulers' scale_model_input). */
export function divide(sample: Float32Array, divisor: number, out: Float32Array): Float32Array {
  checkLength('out', out, sample.length);
  runFloatKernel([sample], out, (k, [x], o, n) => k.divide(x!, o, n, divisor));
  return out;
}

/** The scalars of one Euler step: the denoiser's c_skip and c_out at σ, and the step dt. */
export interface EulerCoefficients {
  cSkip: number;
  cOut: number;
  sigma: number;
  dt: number;
}

/**
 * One Euler step (Karras et al. 2022, alg. 2 with γ = 0) into `out`: x₀ = c_skip·x + c_out·m,
 * d = (x − x₀)/σ, x + d·dt; with `noise`, plus z·σ_up (the ancestral sampler).
 */
export function eulerStep(
  sample: Float32Array,
  modelOutput: Float32Array,
  out: Float32Array,
  { cSkip, cOut, sigma, dt }: EulerCoefficients,
  noise?: { z: Float32Array; sigmaUp: number },
): void {
  checkLength('modelOutput', modelOutput, sample.length);
  checkLength('out', out, sample.length);
  if (!noise) {
    runFloatKernel([sample, modelOutput], out, (k, [x, m], o, n) => k.euler(x!, m!, o, n, cSkip, cOut, sigma, dt));
    return;
  }
  checkLength('noise', noise.z, sample.length);
  runFloatKernel([sample, modelOutput, noise.z], out, (k, [x, m, z], o, n) =>
    k.euler_ancestral(x!, m!, z!, o, n, cSkip, cOut, sigma, dt, noise.sigmaUp),
  );
}

/** DPM-Solver++'s data prediction from ε: x₀ = (x − σ·ε)/α into `out`. */
export function dpmDataFromEpsilon(
  sample: Float32Array,
  eps: Float32Array,
  out: Float32Array,
  sigma: number,
  alpha: number,
): Float32Array {
  checkLength('eps', eps, sample.length);
  checkLength('out', out, sample.length);
  runFloatKernel([sample, eps], out, (k, [x, m], o, n) => k.dpm_data_from_eps(x!, m!, o, n, sigma, alpha));
  return out;
}

/**
 * A DPM-Solver update without noise into `out`: first order sc·x + c₀·m₀ when `m1` is absent,
 * else multistep second order sc·x + c₀·m₀ + c₁·(m₀ − m₁)/r₀ (DPM-Solver++ 2M).
 */
export function dpmUpdate(
  sample: Float32Array,
  m0: Float32Array,
  m1: Float32Array | undefined,
  out: Float32Array,
  c: { sampleCoeff: number; d0Coeff: number; d1Coeff?: number; r0?: number },
): void {
  checkLength('m0', m0, sample.length);
  checkLength('out', out, sample.length);
  if (m1 === undefined) {
    runFloatKernel([sample, m0], out, (k, [x, a], o, n) => k.dpm_first(x!, a!, o, n, c.sampleCoeff, c.d0Coeff));
    return;
  }
  checkLength('m1', m1, sample.length);
  const d1Coeff = c.d1Coeff ?? 0;
  const inverseR0 = 1 / (c.r0 ?? 1);
  runFloatKernel([sample, m0, m1], out, (k, [x, a, b], o, n) =>
    k.dpm_second(x!, a!, b!, o, n, c.sampleCoeff, c.d0Coeff, d1Coeff, inverseR0),
  );
}

/** √ᾱ_t and √(1 − ᾱ_t) of a step, and the clip range of x₀ (Infinity when clipping is off). */
export interface AlphaCoefficients {
  sqrtAlpha: number;
  sqrtBeta: number;
  clipRange: number;
}

/**
 * One DDIM step with η = 0 (Song et al. 2021, eq. 12) into `out`: x₀ from the model output
 * (ε or v), clipped, then √α_prev·x₀ + √(1 − α_prev)·ε.
 */
export function ddimStep(
  sample: Float32Array,
  modelOutput: Float32Array,
  out: Float32Array,
  type: 'epsilon' | 'v_prediction',
  c: AlphaCoefficients & { sqrtAlphaPrev: number; directionCoeff: number },
): void {
  checkLength('modelOutput', modelOutput, sample.length);
  checkLength('out', out, sample.length);
  const kernel = type === 'epsilon' ? 'ddim_eps' : 'ddim_v';
  runFloatKernel([sample, modelOutput], out, (k, [x, m], o, n) =>
    k[kernel]!(x!, m!, o, n, c.sqrtBeta, c.sqrtAlpha, c.clipRange, c.sqrtAlphaPrev, c.directionCoeff),
  );
}

/** LCM's denoiser for ε prediction into `out`: c_out·x₀ + c_skip·x, x₀ = (x − √β·ε)/√α clipped. */
export function lcmDenoise(
  sample: Float32Array,
  eps: Float32Array,
  out: Float32Array,
  c: AlphaCoefficients & { cOut: number; cSkip: number },
): void {
  checkLength('eps', eps, sample.length);
  checkLength('out', out, sample.length);
  runFloatKernel([sample, eps], out, (k, [x, m], o, n) =>
    k.lcm_denoise(x!, m!, o, n, c.sqrtBeta, c.sqrtAlpha, c.clipRange, c.cOut, c.cSkip),
  );
}

/** a·x + b·y into `out`. */
export function axpby(a: number, x: Float32Array, b: number, y: Float32Array, out: Float32Array): void {
  checkLength('y', y, x.length);
  checkLength('out', out, x.length);
  runFloatKernel([x, y], out, (k, [xo, yo], o, n) => k.axpby(xo!, yo!, o, n, a, b));
}

/**
 * A decoder's three float planes of `pixels` values in [−1, 1] (NCHW, one image) → interleaved
 * 8-bit RGB as diffusers computes it in numpy float32: `((x / 2 + 0.5).clip(0, 1) * 255).round()`
 * (half to even), NaN → 0. `planes` is read in place when it lies in `arena` and the arena
 * has `rgbFloats(pixels)` floats to spare for the result.
 */
export function toRgb8(planes: Float32Array, pixels: number, arena?: KernelArena): Uint8Array {
  checkLength('planes', planes, 3 * pixels);
  const home = inPlace([planes]);
  // the output is the arena's own allocation, so the last store's spill stays inside it
  const out = home && arena ? arena.allocateUnset(rgbFloats(pixels)) : undefined;
  if (home && out?.buffer === planes.buffer) {
    home.exports.to_rgb8(planes.byteOffset, out.byteOffset, pixels);
    return new Uint8Array(out.buffer, out.byteOffset, 3 * pixels).slice();
  }
  const stride = Math.ceil(pixels / LANES) * LANES;
  const scratch = new Scratch();
  const src = scratch.region(3 * stride);
  const floats = scratch.floats();
  for (let c = 0; c < 3; c++) floats.set(planes.subarray(c * pixels, (c + 1) * pixels), src / 4 + c * stride);
  // the planes sit `stride` apart; the padding after each is zero
  for (let c = 0; c < 3; c++) floats.fill(0, src / 4 + c * stride + pixels, src / 4 + (c + 1) * stride);
  const rgb = scratch.region(rgbFloats(stride));
  scratch.home.exports.to_rgb8(src, rgb, stride);
  return new Uint8Array(scratch.home.memory.buffer, rgb, 3 * pixels).slice();
}

/** Float32 slots that hold the RGB bytes of `pixels` pixels, with the 4 the last store spills. */
export function rgbFloats(pixels: number): number {
  return Math.ceil((3 * pixels + 4) / 4);
}
