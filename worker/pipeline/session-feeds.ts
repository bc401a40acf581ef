/**
 * Tensors at the session boundary. The pipeline computes in float32 (token ids in int32);
 * sessions get their declared dtype, in chunks of the export's static batch size. Feeds are
 * built once per loop and reread on every run, so the denoising loop rewrites its buffers in
 * place instead of making new tensors each step.
 */
import ort from 'onnxruntime-node';
import type { Tensor } from 'onnxruntime-node';
import { float16ToFloat32, float32ToFloat16, toFloat16Bits } from './float16.js';
import { staticDim, type OnnxModel, type TensorSpec } from './onnx-session.js';

type SessionArray = Float32Array | Uint16Array | Float64Array | Int32Array | BigInt64Array;

/** A zeroed buffer of `length` values in the session's dtype (float16 as raw bits). */
function sessionArray(spec: TensorSpec, length: number): SessionArray {
  switch (spec.type) {
    case 'float32':
      return new Float32Array(length);
    case 'float16':
      return new Uint16Array(length);
    case 'float64':
      return new Float64Array(length);
    case 'int32':
      return new Int32Array(length);
    case 'int64':
      return new BigInt64Array(length);
    default:
      throw new Error(`Unsupported tensor type ${spec.type} for "${spec.name}"`);
  }
}

/** Whether the session takes `data` as it is. */
function takesAsIs(spec: TensorSpec, data: Float32Array | Int32Array): boolean {
  return (spec.type === 'float32' && data instanceof Float32Array) || (spec.type === 'int32' && data instanceof Int32Array);
}

/** `values` converted to the dtype of `target` from `offset`. Integers truncate. */
function writeAs(values: Float32Array | Int32Array, target: SessionArray, offset: number): void {
  if (target instanceof Uint16Array) {
    const floats = values instanceof Float32Array ? values : Float32Array.from(values);
    float32ToFloat16(floats, target.subarray(offset, offset + values.length));
  } else if (target instanceof BigInt64Array) {
    for (let i = 0; i < values.length; i++) target[offset + i] = BigInt(Math.trunc(values[i]!));
  } else if (target instanceof Int32Array && values instanceof Float32Array) {
    for (let i = 0; i < values.length; i++) target[offset + i] = Math.trunc(values[i]!);
  } else {
    target.set(values, offset);
  }
}

/** Rows `start … start + rows − 1` of a batch, run together. */
interface Chunk {
  start: number;
  rows: number;
}

/**
 * `rows` rows split into runs of the export's static batch size (`size`), the last run padded by
 * repeating its last row; one run of all rows when the batch axis is dynamic.
 */
export interface Batch {
  rows: number;
  size: number;
  chunks: Chunk[];
}

/** The batching of a run whose first input is `spec` (all inputs share its batch axis). */
export function batchOf(spec: TensorSpec, rows: number): Batch {
  const size = staticDim(spec, 0) ?? rows;
  const chunks: Chunk[] = [];
  for (let start = 0; start < rows; start += size) chunks.push({ start, rows: Math.min(size, rows - start) });
  return { rows, size, chunks };
}

/**
 * One session input holding `batch.rows` rows of `data`. Its tensors are made once: a chunk the
 * session takes as it is, unpadded, is a view of `data`, so it sees every rewrite of `data`;
 * the others (another dtype, padding) are staged copies that `refresh` rewrites.
 */
export class BatchedInput {
  readonly tensors: Tensor[] = [];
  private readonly staged: Array<{ target: SessionArray; chunk: Chunk }> = [];
  private readonly rowSize: number;

  constructor(
    readonly spec: TensorSpec,
    private readonly data: Float32Array | Int32Array,
    private readonly batch: Batch,
    dims: readonly number[],
  ) {
    this.rowSize = data.length / batch.rows;
    const chunkDims = [batch.size, ...dims.slice(1)];
    for (const chunk of batch.chunks) {
      if (chunk.rows === batch.size && takesAsIs(spec, data)) {
        const view = data.subarray(chunk.start * this.rowSize, (chunk.start + chunk.rows) * this.rowSize);
        this.tensors.push(new ort.Tensor(spec.type, view, chunkDims));
      } else {
        const target = sessionArray(spec, batch.size * this.rowSize);
        this.staged.push({ target, chunk });
        this.tensors.push(new ort.Tensor(spec.type, target, chunkDims));
      }
    }
    this.refresh();
  }

  /** Copies `data` into the staged tensors after it changed. */
  refresh(): void {
    const { rowSize, data } = this;
    for (const { target, chunk } of this.staged) {
      for (let r = 0; r < this.batch.size; r++) {
        const row = chunk.start + Math.min(r, chunk.rows - 1);
        writeAs(data.subarray(row * rowSize, (row + 1) * rowSize), target, r * rowSize);
      }
    }
  }
}

/** The UNet's `timestep` as it declares it, a scalar or one value per row of a run; `set` each step. */
export class TimestepInput {
  readonly tensor: Tensor;
  private readonly data: SessionArray;

  constructor(
    private readonly spec: TensorSpec,
    rowsPerRun: number,
  ) {
    const scalar = spec.shape.length === 0;
    const length = scalar ? 1 : (staticDim(spec, 0) ?? rowsPerRun);
    this.data = sessionArray(spec, length);
    this.tensor = new ort.Tensor(spec.type, this.data, scalar ? [] : [length]);
  }

  set(t: number): void {
    const data = this.data;
    // numpy's astype(int64) truncates fractional (Karras / Euler) timesteps, as diffusers' ONNX pipeline does.
    if (data instanceof BigInt64Array) data.fill(BigInt(Math.trunc(t)));
    else if (data instanceof Int32Array) data.fill(Math.trunc(t));
    else if (data instanceof Uint16Array) data.fill(toFloat16Bits(t));
    else data.fill(t);
  }

  get name(): string {
    return this.spec.name;
  }
}

/** A float32 buffer for a run's output rows, with the output's full dims. */
export interface OutputBuffer {
  data: Float32Array;
  dims: readonly number[];
}

/**
 * Runs `model` once per chunk of `inputs`' batch (plus `fixed` feeds, the same for every run)
 * and returns `output`'s rows as float32. With `into`, the rows land in `into.data`: ONNX
 * Runtime writes them there itself when one run gives all rows in float32 (no new buffer per
 * run), else they are converted into it. Without it, the session's own array is returned when
 * one run gave all rows in float32, else a new one. `ms` is the time inside ONNX Runtime.
 */
export async function runRows(
  model: OnnxModel,
  inputs: readonly BatchedInput[],
  batch: Batch,
  output: TensorSpec,
  fixed: Record<string, Tensor> = {},
  into?: OutputBuffer,
): Promise<{ data: Float32Array; dims: number[]; ms: number }> {
  const whole = batch.chunks.length === 1 && batch.chunks[0]!.rows === batch.size;
  if (whole && into && output.type === 'float32') {
    const feeds: Record<string, Tensor> = { ...fixed };
    for (const input of inputs) feeds[input.spec.name] = input.tensors[0]!;
    const target = new ort.Tensor('float32', into.data, [...into.dims]);
    const result = await model.run(feeds, { [output.name]: target });
    return { data: into.data, dims: [...into.dims], ms: result.ms };
  }
  let out: Float32Array | undefined;
  let dims: number[] = [];
  let ms = 0;
  for (const [index, chunk] of batch.chunks.entries()) {
    const feeds: Record<string, Tensor> = { ...fixed };
    for (const input of inputs) feeds[input.spec.name] = input.tensors[index]!;
    const result = await model.run(feeds, [output.name]);
    ms += result.ms;
    const tensor = result.outputs[output.name]!;
    dims = [batch.rows, ...tensor.dims.slice(1)];
    const rowSize = tensor.size / batch.size;
    if (whole && !into && tensor.data instanceof Float32Array) return { data: tensor.data, dims, ms };
    const length = batch.rows * rowSize;
    out ??= into?.data.length === length ? into.data : new Float32Array(length);
    readRows(tensor, chunk.rows * rowSize, out.subarray(chunk.start * rowSize, (chunk.start + chunk.rows) * rowSize));
  }
  return { data: out!, dims, ms };
}

/** The first `count` values of a float output (float16 decoded) into `out`. */
function readRows(tensor: Tensor, count: number, out: Float32Array): void {
  const data = tensor.data;
  if (data instanceof Float32Array) out.set(data.subarray(0, count));
  else if (tensor.type === 'float16' && data instanceof Uint16Array) float16ToFloat32(data.subarray(0, count), out);
  else if (ArrayBuffer.isView(data) && !(data instanceof BigInt64Array) && !(data instanceof BigUint64Array)) {
    out.set((data as Float64Array).subarray(0, count));
  } else {
    throw new Error(`Unexpected output type ${tensor.type}`);
  }
}
