/**
 * A small ONNX graph builder: nodes are added in topological order, names follow the PyTorch
 * exporter (`/scope/Op_output_0`, parameters `scope.weight`), and float weights are created
 * in the model's dtype from the seeded generator.
 */
// The pipeline's converter: float16 weights round exactly as the pipeline's float16 inputs do.
import { float32ToFloat16 } from '../../worker/pipeline/float16.js';
import {
  AttributeType,
  DataLocation,
  DataType,
  encodeModel,
  type AttributeMessage,
  type DimensionMessage,
  type NodeMessage,
  type TensorMessage,
  type ValueInfoMessage,
} from './onnx-proto.js';
import { uniformWeights } from './prng.js';

export type FloatType = 'float32' | 'float16';
export type ElemType = FloatType | 'int32' | 'int64' | 'bool';
/** A static size or a symbolic (`dim_param`) name. */
export type Dim = number | string;

export const OPSET = 17;
export const IR_VERSION = 8;

const DATA_TYPES: Record<ElemType, number> = {
  float32: DataType.FLOAT,
  float16: DataType.FLOAT16,
  int32: DataType.INT32,
  int64: DataType.INT64,
  bool: DataType.BOOL,
};

export function dataTypeOf(type: ElemType): number {
  return DATA_TYPES[type];
}

export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] };

export const attr = {
  int: (value: number): Attr => ({ kind: 'int', value }),
  float: (value: number): Attr => ({ kind: 'float', value }),
  string: (value: string): Attr => ({ kind: 'string', value }),
  ints: (value: readonly number[]): Attr => ({ kind: 'ints', value }),
  floats: (value: readonly number[]): Attr => ({ kind: 'floats', value }),
};

function toAttribute(name: string, a: Attr): AttributeMessage {
  switch (a.kind) {
    case 'int':
      return { name, type: AttributeType.INT, i: a.value };
    case 'float':
      return { name, type: AttributeType.FLOAT, f: a.value };
    case 'string':
      return { name, type: AttributeType.STRING, s: new TextEncoder().encode(a.value) };
    case 'ints':
      return { name, type: AttributeType.INTS, ints: [...a.value] };
    case 'floats':
      return { name, type: AttributeType.FLOATS, floats: [...a.value] };
  }
}

interface Initializer {
  name: string;
  type: ElemType;
  dims: number[];
  raw: Uint8Array;
}

function rawBytes(type: ElemType, values: ArrayLike<number>): Uint8Array {
  switch (type) {
    case 'float32':
      return bytesOf(Float32Array.from(values));
    case 'float16':
      return bytesOf(float32ToFloat16(Float32Array.from(values)));
    case 'int32':
      return bytesOf(Int32Array.from(values));
    case 'int64':
      return bytesOf(BigInt64Array.from(Array.from(values, (v) => BigInt(v))));
    case 'bool':
      return Uint8Array.from(values, (v) => (v ? 1 : 0));
  }
}

// ONNX raw_data is little-endian, like every platform Node runs on.
function bytesOf(array: Float32Array | Uint16Array | Int32Array | BigInt64Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

function valueInfo(name: string, type: ElemType, dims: readonly Dim[]): ValueInfoMessage {
  const dim = dims.map((d): DimensionMessage => (typeof d === 'number' ? { dim_value: d } : { dim_param: d }));
  return { name, type: { tensor_type: { elem_type: DATA_TYPES[type], shape: { dim } } } };
}

export interface ExternalDataOptions {
  /** File name beside model.onnx (`model.onnx_data`, `weights.pb`). */
  location: string;
  /** Tensors smaller than this stay inside the graph (onnx's default size_threshold). */
  sizeThreshold?: number;
}

export interface SerializedModel {
  model: Uint8Array;
  /** Contents of the external data file, when one was asked for. */
  externalData?: Uint8Array;
}

export class GraphBuilder {
  readonly float: FloatType;
  private readonly seed: number;
  private readonly nodes: NodeMessage[] = [];
  private readonly initializers: Initializer[] = [];
  private readonly inputs: ValueInfoMessage[] = [];
  private readonly outputs: ValueInfoMessage[] = [];
  private readonly names = new Set<string>();
  private readonly scopes: string[] = [];
  private readonly opCounts = new Map<string, number>();

  constructor(
    readonly name: string,
    options: { float: FloatType; seed: number },
  ) {
    this.float = options.float;
    this.seed = options.seed;
  }

  /** Runs `fn` with node and parameter names prefixed by `scope`. */
  scope<T>(scope: string, fn: () => T): T {
    this.scopes.push(scope);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  input(name: string, type: ElemType, dims: readonly Dim[]): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Declares `value` (which a node must have produced under that name) as a graph output. */
  output(name: string, type: ElemType, dims: readonly Dim[]): void {
    if (!this.names.has(name)) throw new Error(`graph output ${name} is produced by no node`);
    this.outputs.push(valueInfo(name, type, dims));
  }

  /** Adds a node; returns its first output (named `outputName` when given). */
  op(opType: string, inputs: readonly string[], attrs: Record<string, Attr> = {}, outputName?: string): string {
    const key = `${this.scopes.join('/')}/${opType}`;
    const count = this.opCounts.get(key) ?? 0;
    this.opCounts.set(key, count + 1);
    const nodeName = `/${this.scopes.length > 0 ? `${this.scopes.join('/')}/` : ''}${opType}${count > 0 ? `_${count}` : ''}`;
    const output = outputName ?? `${nodeName}_output_0`;
    this.claim(output);
    this.nodes.push({
      name: nodeName,
      op_type: opType,
      input: [...inputs],
      output: [output],
      attribute: Object.entries(attrs).map(([n, a]) => toAttribute(n, a)),
    });
    return output;
  }

  /** A constant tensor stored as an initializer. */
  constant(label: string, type: ElemType, dims: readonly number[], values: ArrayLike<number>): string {
    const name = this.paramName(label);
    const count = dims.reduce((a, b) => a * b, 1);
    if (values.length !== count) throw new Error(`${name}: ${values.length} values for dims [${dims}]`);
    this.claim(name);
    this.initializers.push({ name, type, dims: [...dims], raw: rawBytes(type, values) });
    return name;
  }

  /** A constant in the model's float dtype. */
  floatConstant(label: string, dims: readonly number[], values: ArrayLike<number>): string {
    return this.constant(label, this.float, dims, values);
  }

  /**
   * A trainable-looking parameter: uniform random with standard deviation `std`, plus `add`
   * (a deterministic part of the same length) when given.
   */
  weight(label: string, dims: readonly number[], std: number, add?: Float32Array): string {
    const count = dims.reduce((a, b) => a * b, 1);
    const name = this.paramName(label);
    const values = uniformWeights(this.seed, `${this.name}:${name}`, count, std);
    if (add) for (let i = 0; i < count; i++) values[i]! += add[i]!;
    return this.floatConstant(label, dims, values);
  }

  /** A parameter filled with one value (norm scales and shifts). */
  filled(label: string, dims: readonly number[], value: number): string {
    const count = dims.reduce((a, b) => a * b, 1);
    return this.floatConstant(label, dims, new Float32Array(count).fill(value));
  }

  int64s(label: string, values: readonly number[]): string {
    return this.constant(label, 'int64', [values.length], values);
  }

  /** A float scalar (shape []) in the model's dtype. */
  scalar(label: string, value: number): string {
    return this.floatConstant(label, [], [value]);
  }

  serialize(options: { docString: string; external?: ExternalDataOptions }): SerializedModel {
    const { external } = options;
    const threshold = external?.sizeThreshold ?? 1024;
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const initializer = this.initializers.map((init): TensorMessage => {
      const tensor: TensorMessage = { name: init.name, dims: init.dims, data_type: DATA_TYPES[init.type] };
      if (external && init.raw.byteLength >= threshold) {
        chunks.push(init.raw);
        tensor.external_data = [
          { key: 'location', value: external.location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(init.raw.byteLength) },
        ];
        tensor.data_location = DataLocation.EXTERNAL;
        offset += init.raw.byteLength;
      } else {
        tensor.raw_data = init.raw;
      }
      return tensor;
    });
    const model = encodeModel({
      ir_version: IR_VERSION,
      opset_import: [{ domain: '', version: OPSET }],
      producer_name: 'sd-jobs tiny-model',
      producer_version: '1',
      doc_string: options.docString,
      graph: { name: this.name, node: this.nodes, initializer, input: this.inputs, output: this.outputs },
    });
    if (!external) return { model };
    const data = new Uint8Array(offset);
    let at = 0;
    for (const chunk of chunks) {
      data.set(chunk, at);
      at += chunk.byteLength;
    }
    return { model, externalData: data };
  }

  private paramName(label: string): string {
    return this.scopes.length > 0 ? `${this.scopes.join('.')}.${label}` : label;
  }

  private claim(name: string): void {
    if (this.names.has(name)) throw new Error(`duplicate tensor name ${name}`);
    this.names.add(name);
  }
}
