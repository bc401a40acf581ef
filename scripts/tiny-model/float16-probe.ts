/**
 * The one-node float16 model (y = x · x over 4 values) the worker runs to find out whether a
 * WebGPU adapter has f16 shaders; worker/pipeline/webgpu-device.ts holds its bytes, which
 * test/webgpu.test.ts checks against this builder.
 */
import { GraphBuilder } from './graph-builder.js';

export function float16ProbeModel(): Uint8Array {
  const g = new GraphBuilder('f16probe', { float: 'float16', seed: 0 });
  const x = g.input('x', 'float16', [4]);
  g.op('Mul', [x, x], {}, 'y');
  g.output('y', 'float16', [4]);
  return g.serialize({ docString: 'float16 probe: y = x * x' }).model;
}
