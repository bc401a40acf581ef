/**
 * A one-layer CLIP-style text transformer (Radford et al., 2021): token + position embeddings,
 * one pre-LN block with causal self-attention and a quick-GELU MLP, a final LayerNorm, and the
 * pooled state at the end-of-text token (the highest id). Causal attention makes each state
 * depend on its own token, its position and every token before it, as in CLIP.
 */
import { attr, dataTypeOf, GraphBuilder, type Dim, type FloatType } from './graph-builder.js';
import { attention, layerNorm, linear, quickGelu } from './layers.js';

export const TEXT_HIDDEN_SIZE = 32;
export const TEXT_INTERMEDIATE_SIZE = 128;
export const MAX_POSITIONS = 77;
/** Token ids are folded into a small table (id mod 1024) instead of CLIP's 49,408 rows. */
export const TOKEN_TABLE_SIZE = 1024;
/** CLIP's vocabulary size: what config.json reports. */
export const VOCAB_SIZE = 49408;

export interface TextEncoderOptions {
  float: FloatType;
  inputIds: 'int32' | 'int64';
  batch: Dim;
  seed: number;
}

export function buildTextEncoder(o: TextEncoderOptions): GraphBuilder {
  const b = new GraphBuilder('text_encoder', { float: o.float, seed: o.seed });
  const H = TEXT_HIDDEN_SIZE;
  const L = MAX_POSITIONS;
  const inputIds = b.input('input_ids', o.inputIds, [o.batch, L]);

  const hidden = b.scope('text_model', () => {
    const ids = o.inputIds === 'int64' ? inputIds : b.op('Cast', [inputIds], { to: attr.int(dataTypeOf('int64')) });
    let x = b.scope('embeddings', () => {
      const rows = b.op('Mod', [ids, b.constant('table_size', 'int64', [], [TOKEN_TABLE_SIZE])]);
      const table = b.scope('token_embedding', () => b.weight('weight', [TOKEN_TABLE_SIZE, H], 1));
      const tokens = b.op('Gather', [table, rows], { axis: attr.int(0) });
      const positions = b.scope('position_embedding', () => b.weight('weight', [L, H], 0.5));
      return b.op('Add', [tokens, positions]);
    });

    x = b.scope('encoder', () =>
      b.scope('layers', () =>
        b.scope('0', () => {
          const causal = new Float32Array(L * L);
          for (let i = 0; i < L; i++) for (let j = i + 1; j < L; j++) causal[i * L + j] = -10000;
          const mask = b.floatConstant('causal_mask', [L, L], causal);
          const normed1 = layerNorm(b, 'layer_norm1', x, H);
          const attended = attention(b, 'self_attn', normed1, normed1, {
            queryDim: H,
            contextDim: H,
            innerDim: H,
            outDim: H,
            qkvBias: true,
            mask,
          });
          const h = b.op('Add', [x, attended]);
          const normed2 = layerNorm(b, 'layer_norm2', h, H);
          const mlp = b.scope('mlp', () => {
            const up = linear(b, 'fc1', normed2, H, TEXT_INTERMEDIATE_SIZE);
            return linear(b, 'fc2', quickGelu(b, up), TEXT_INTERMEDIATE_SIZE, H);
          });
          return b.op('Add', [h, mlp]);
        }),
      ),
    );

    const last = layerNorm(b, 'final_layer_norm', x, H, 'last_hidden_state');

    // pooled = last[b, argmax(ids[b])]: the first end-of-text token, as a one-hot matmul.
    b.scope('pooler', () => {
      const idsAsFloat = b.op('Cast', [ids], { to: attr.int(dataTypeOf('float32')) });
      const eos = b.op('ArgMax', [idsAsFloat], { axis: attr.int(-1), keepdims: attr.int(1) });
      const positions = b.int64s('positions', Array.from({ length: L }, (_, i) => i));
      const oneHot = b.op('Cast', [b.op('Equal', [eos, positions])], { to: attr.int(dataTypeOf(o.float)) });
      const picked = b.op('MatMul', [b.op('Unsqueeze', [oneHot, b.int64s('axis1', [1])]), last]);
      b.op('Squeeze', [picked, b.int64s('squeeze_axis', [1])], {}, 'pooler_output');
    });
    return last;
  });

  b.output(hidden, o.float, [o.batch, L, H]);
  b.output('pooler_output', o.float, [o.batch, H]);
  return b;
}
