/** Layers shared by the sub-models, each expanded into plain opset-17 ONNX nodes. */
import { attr, type GraphBuilder } from './graph-builder.js';

export const NORM_EPS = 1e-5;

/** `x·W + b` over the last axis (W stored as [in, out], as the PyTorch exporter does). */
export function linear(
  b: GraphBuilder,
  scope: string,
  x: string,
  inDim: number,
  outDim: number,
  options: { std?: number; bias?: boolean } = {},
): string {
  return b.scope(scope, () => {
    const std = options.std ?? 1 / Math.sqrt(inDim);
    const y = b.op('MatMul', [x, b.weight('weight', [inDim, outDim], std)]);
    if (options.bias === false) return y;
    return b.op('Add', [y, b.weight('bias', [outDim], 0.02)]);
  });
}

/** A k×k convolution, stride 1, "same" padding. */
export function conv2d(
  b: GraphBuilder,
  scope: string,
  x: string,
  inChannels: number,
  outChannels: number,
  options: { kernel?: number; std?: number; smoothing?: number; outputName?: string } = {},
): string {
  const k = options.kernel ?? 3;
  const pad = Math.floor(k / 2);
  return b.scope(scope, () => {
    const std = options.std ?? 1 / Math.sqrt(inChannels * k * k);
    const dims = [outChannels, inChannels, k, k];
    const smooth = options.smoothing ? blurKernel(outChannels, inChannels, k, options.smoothing) : undefined;
    const w = b.weight('weight', dims, std, smooth);
    const bias = b.weight('bias', [outChannels], 0.02);
    const attrs = {
      dilations: attr.ints([1, 1]),
      group: attr.int(1),
      kernel_shape: attr.ints([k, k]),
      pads: attr.ints([pad, pad, pad, pad]),
      strides: attr.ints([1, 1]),
    };
    return b.op('Conv', [x, w, bias], attrs, options.outputName);
  });
}

/**
 * A channel-preserving binomial blur ([1 2 1]ᵀ[1 2 1]/16) times `gain`: output channel o
 * averages the input channels i with i ≡ o (mod min(in, out)). Added to random conv weights
 * it makes the layer mostly low-pass, so random decoders draw smooth shapes, not hatching.
 */
function blurKernel(outChannels: number, inChannels: number, k: number, gain: number): Float32Array {
  if (k !== 3) throw new Error('blurKernel: 3×3 kernels only');
  const taps = [1, 2, 1];
  const m = Math.min(inChannels, outChannels);
  const out = new Float32Array(outChannels * inChannels * 9);
  for (let o = 0; o < outChannels; o++) {
    for (let i = 0; i < inChannels; i++) {
      if (o % m !== i % m) continue;
      for (let y = 0; y < 3; y++) {
        for (let x = 0; x < 3; x++) {
          out[((o * inChannels + i) * 3 + y) * 3 + x] = (gain * (m / inChannels) * taps[y]! * taps[x]!) / 16;
        }
      }
    }
  }
  return out;
}

/**
 * GroupNorm (Wu & He, 2018) on [B, C, H, W], the way PyTorch exports it before opset 18:
 * reshape to [B, G, -1], InstanceNormalization, reshape back, then the per-channel affine.
 */
export function groupNorm(b: GraphBuilder, scope: string, x: string, channels: number, groups: number): string {
  return b.scope(scope, () => {
    const grouped = b.op('Reshape', [x, b.int64s('group_shape', [0, groups, -1])]);
    const unitScale = b.filled('group_scale', [groups], 1);
    const zeroBias = b.filled('group_bias', [groups], 0);
    const normed = b.op('InstanceNormalization', [grouped, unitScale, zeroBias], { epsilon: attr.float(NORM_EPS) });
    const restored = b.op('Reshape', [normed, b.op('Shape', [x])]);
    const scaled = b.op('Mul', [restored, b.filled('weight', [channels, 1, 1], 1)]);
    return b.op('Add', [scaled, b.filled('bias', [channels, 1, 1], 0)]);
  });
}

/** LayerNorm (Ba et al., 2016) over the last axis. */
export function layerNorm(b: GraphBuilder, scope: string, x: string, dim: number, outputName?: string): string {
  return b.scope(scope, () =>
    b.op(
      'LayerNormalization',
      [x, b.filled('weight', [dim], 1), b.filled('bias', [dim], 0)],
      { axis: attr.int(-1), epsilon: attr.float(NORM_EPS) },
      outputName,
    ),
  );
}

/** SiLU(x) = x·σ(x) (opset 17 has no SiLU operator). */
export function silu(b: GraphBuilder, x: string): string {
  return b.op('Mul', [x, b.op('Sigmoid', [x])]);
}

/** CLIP's quick GELU: x·σ(1.702x). */
export function quickGelu(b: GraphBuilder, x: string): string {
  return b.op('Mul', [x, b.op('Sigmoid', [b.op('Mul', [x, b.scalar('gelu_scale', 1.702)])])]);
}

export interface AttentionOptions {
  queryDim: number;
  contextDim: number;
  innerDim: number;
  outDim: number;
  /** Biases on the q/k/v projections (CLIP has them, the UNet's attention does not). */
  qkvBias: boolean;
  /** Added to the scores before the softmax (a causal mask). */
  mask?: string;
  /** Standard deviation of the output projection's weights. */
  outStd?: number;
}

/**
 * Single-head scaled dot-product attention (Vaswani et al., 2017, eq. 1):
 * softmax(Q·Kᵀ/√d)·V on [B, N, C] queries and [B, M, C'] context, then the output projection.
 */
export function attention(b: GraphBuilder, scope: string, query: string, context: string, o: AttentionOptions): string {
  return b.scope(scope, () => {
    const q = linear(b, 'to_q', query, o.queryDim, o.innerDim, { bias: o.qkvBias });
    const k = linear(b, 'to_k', context, o.contextDim, o.innerDim, { bias: o.qkvBias });
    const v = linear(b, 'to_v', context, o.contextDim, o.innerDim, { bias: o.qkvBias });
    const kT = b.op('Transpose', [k], { perm: attr.ints([0, 2, 1]) });
    let scores = b.op('Mul', [b.op('MatMul', [q, kT]), b.scalar('scale', 1 / Math.sqrt(o.innerDim))]);
    if (o.mask) scores = b.op('Add', [scores, o.mask]);
    const probs = b.op('Softmax', [scores], { axis: attr.int(-1) });
    const mixed = b.op('MatMul', [probs, v]);
    return linear(b, 'to_out', mixed, o.innerDim, o.outDim, o.outStd === undefined ? {} : { std: o.outStd });
  });
}
