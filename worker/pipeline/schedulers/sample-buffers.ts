/**
 * The arrays a scheduler step reads and writes. Steps are element-wise, so a result may go into
 * the caller's buffer, even the sample itself; what a scheduler keeps between steps (ε history,
 * the sample being refined) is its own copy, allocated on first use and reused after that.
 */
import { allocateBeside } from '../kernels/index.js';

/** Throws unless the model output matches the sample element for element. */
export function checkSameLength(modelOutput: Float32Array, sample: Float32Array): void {
  if (modelOutput.length !== sample.length) {
    throw new RangeError(`model output has ${modelOutput.length} values but the sample has ${sample.length}`);
  }
}

/** The caller's `out`, checked against the sample's size, or a new array for the result. */
export function outputFor(sample: Float32Array, out: Float32Array | undefined): Float32Array {
  if (out === undefined) return new Float32Array(sample.length);
  if (out.length !== sample.length) {
    throw new RangeError(`output has ${out.length} values but the sample has ${sample.length}`);
  }
  return out;
}

/** `scale_model_input` of the schedulers that feed x_t as it is. */
export function unscaledModelInput(sample: Float32Array, out: Float32Array | undefined): Float32Array {
  if (out === undefined || out === sample) return sample;
  outputFor(sample, out).set(sample);
  return out;
}

/**
 * `buffer` when it holds `length` values, else a new one, placed beside `like` when that lies in
 * a kernel arena (kernels then read it in place).
 */
export function reusable(buffer: Float32Array | undefined, length: number, like?: Float32Array): Float32Array {
  return buffer?.length === length ? buffer : allocateBeside(like, length);
}

/** `values` copied into `buffer` (or a new array): state must not alias the caller's arrays. */
export function keepCopy(buffer: Float32Array | undefined, values: Float32Array): Float32Array {
  const copy = reusable(buffer, values.length, values);
  copy.set(values);
  return copy;
}
