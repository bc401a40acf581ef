import { open, type FileHandle } from 'node:fs/promises';

/**
 * The declared inputs of an ONNX model (name, element type, shape), read from the file's protobuf
 * without loading the model: the wire format is walked field by field and everything but the
 * graph's `input` entries (nodes, weight initializers — gigabytes in a real UNet) is skipped by
 * seeking past it. Field numbers are onnx.proto's: ModelProto.graph = 7, GraphProto.input = 11,
 * ValueInfoProto {name = 1, type = 2}, TypeProto.tensor_type = 1, Tensor {elem_type = 1,
 * shape = 2}, TensorShapeProto.dim = 1, Dimension {dim_value = 1, dim_param = 2}.
 */

/** A dimension: its size when static, the axis name when symbolic, null when neither. */
export type OnnxDim = number | string | null;

export interface OnnxInput {
  name: string;
  /** TensorProto.DataType: 1 float, 10 float16, 6 int32, 7 int64, 11 double; 0 when not a tensor. */
  elemType: number;
  /** null when the input declares no shape at all. */
  shape: OnnxDim[] | null;
}

export const ONNX_ELEM_TYPES: Readonly<Record<number, string>> = { 1: 'float32', 6: 'int32', 7: 'int64', 10: 'float16', 11: 'float64' };

export class OnnxFormatError extends Error {
  constructor(file: string, why: string) {
    super(`${file} is not a readable ONNX model: ${why}`);
    this.name = 'OnnxFormatError';
  }
}

const CHUNK = 64 * 1024;

/** Sequential reads over a file with a small buffer; long fields are skipped by moving the offset. */
class WireReader {
  private buffer = Buffer.alloc(CHUNK);
  private bufferStart = 0;
  private bufferLength = 0;
  pos = 0;
  bytesRead = 0;

  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
    private readonly file: string,
  ) {}

  fail(why: string): never {
    throw new OnnxFormatError(this.file, why);
  }

  private async fill(): Promise<void> {
    const { bytesRead } = await this.handle.read(this.buffer, 0, CHUNK, this.pos);
    this.bufferStart = this.pos;
    this.bufferLength = bytesRead;
    this.bytesRead += bytesRead;
    if (bytesRead === 0) this.fail(`it ends early (at byte ${this.pos})`);
  }

  async byte(): Promise<number> {
    if (this.pos < this.bufferStart || this.pos >= this.bufferStart + this.bufferLength) await this.fill();
    const value = this.buffer[this.pos - this.bufferStart] as number;
    this.pos += 1;
    return value;
  }

  async varint(): Promise<bigint> {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = await this.byte();
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
    }
    return this.fail('a varint runs past 10 bytes');
  }

  async bytes(length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = await this.byte();
    return out;
  }

  /** Reads a field key: [field number, wire type]. */
  async key(): Promise<[number, number]> {
    const key = Number(await this.varint());
    return [key >>> 3, key & 7];
  }

  /** Moves past a field's value of `wireType`. */
  async skip(wireType: number): Promise<void> {
    if (wireType === 0) await this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 5) this.pos += 4;
    else if (wireType === 2) {
      const length = await this.length(); // read first: `pos += await …` would add to the old pos
      this.pos += length;
    }
    else this.fail(`unsupported wire type ${wireType} at byte ${this.pos}`);
    if (this.pos > this.size) this.fail('a field runs past the end of the file');
  }

  async length(): Promise<number> {
    const length = Number(await this.varint());
    if (this.pos + length > this.size) this.fail(`a field of ${length} bytes at byte ${this.pos} runs past the end of the file`);
    return length;
  }
}

/** A protobuf message already in memory (the small ValueInfoProto entries). */
function* fields(buf: Buffer): Generator<{ field: number; wire: number; varint?: bigint; bytes?: Buffer }> {
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (pos >= buf.length) throw new Error('truncated varint');
      const b = buf[pos++] as number;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new Error('varint too long');
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) yield { field, wire, varint: varint() };
    else if (wire === 2) {
      const length = Number(varint());
      if (pos + length > buf.length) throw new Error('truncated field');
      yield { field, wire, bytes: buf.subarray(pos, pos + length) };
      pos += length;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
}

function decodeValueInfo(buf: Buffer): OnnxInput {
  const input: OnnxInput = { name: '', elemType: 0, shape: null };
  for (const f of fields(buf)) {
    if (f.field === 1 && f.bytes) input.name = f.bytes.toString('utf8');
    if (f.field !== 2 || !f.bytes) continue;
    for (const t of fields(f.bytes)) {
      if (t.field !== 1 || !t.bytes) continue; // TypeProto.tensor_type
      for (const tensor of fields(t.bytes)) {
        if (tensor.field === 1 && tensor.varint !== undefined) input.elemType = Number(tensor.varint);
        if (tensor.field === 2 && tensor.bytes) {
          input.shape = [];
          for (const dim of fields(tensor.bytes)) {
            if (dim.field !== 1 || !dim.bytes) continue;
            let value: OnnxDim = null;
            for (const d of fields(dim.bytes)) {
              if (d.field === 1 && d.varint !== undefined) value = d.varint > 0n && d.varint < 2n ** 53n ? Number(d.varint) : null;
              if (d.field === 2 && d.bytes) value = d.bytes.toString('utf8');
            }
            input.shape.push(value);
          }
        }
      }
    }
  }
  return input;
}

/**
 * The graph inputs `file` declares. `bytesRead` tells how much of the file was read (tests check
 * that the weights were skipped, not read).
 */
export async function readOnnxInputs(file: string): Promise<{ inputs: Map<string, OnnxInput>; bytesRead: number }> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const reader = new WireReader(handle, size, file);
    const inputs = new Map<string, OnnxInput>();
    let sawGraph = false;
    while (reader.pos < size) {
      const [field, wire] = await reader.key();
      if (field !== 7 || wire !== 2) {
        await reader.skip(wire);
        continue;
      }
      sawGraph = true;
      const graphLength = await reader.length();
      const end = reader.pos + graphLength;
      while (reader.pos < end) {
        const [graphField, graphWire] = await reader.key();
        if (graphField === 11 && graphWire === 2) {
          const entry = await reader.bytes(await reader.length());
          try {
            const input = decodeValueInfo(entry);
            inputs.set(input.name, input);
          } catch (err) {
            reader.fail(`a graph input is malformed (${(err as Error).message})`);
          }
        } else {
          await reader.skip(graphWire);
        }
      }
      if (reader.pos !== end) reader.fail('the graph ends inside a field');
    }
    if (!sawGraph) reader.fail('it has no graph');
    return { inputs, bytesRead: reader.bytesRead };
  } finally {
    await handle.close();
  }
}
