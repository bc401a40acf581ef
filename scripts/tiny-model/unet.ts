/**
 * A one-level UNet noise predictor (Ronneberger et al., 2015; Rombach et al., 2022) with the
 * parts of diffusers' UNet2DConditionModel that shape the interface: sinusoidal timestep
 * embedding → MLP, a ResNet block that adds it per channel, a cross-attention block on the
 * text states (residual), and GroupNorm → SiLU → 3×3 conv back to the latent channels.
 * For ε-prediction the exact noise estimate of unit-Gaussian latents, √(1-ᾱ_t)·sample, is
 * added, so that samplers converge to latents of sensible scale as with a trained model.
 */
import { attr, dataTypeOf, GraphBuilder, type Dim, type FloatType } from './graph-builder.js';
import { attention, conv2d, groupNorm, linear, silu } from './layers.js';
import { TEXT_HIDDEN_SIZE } from './text-encoder.js';

export const LATENT_CHANNELS = 4;
export const UNET_CHANNELS = 32;
export const UNET_NORM_GROUPS = 8;
/** Sinusoidal embedding width (diffusers uses block_out_channels[0]). */
export const TIME_PROJ_DIM = 32;
export const TIME_EMBED_DIM = 128;
/** Width of LCM's guidance-scale embedding input `timestep_cond`. */
export const TIME_COND_DIM = 256;
export const ATTENTION_DIM = 32;
/**
 * Scale of the random network's part of the prediction: large enough that prompt, seed and
 * guidance visibly change the image, small enough that sampled latents stay near unit scale.
 */
const RESIDUAL_STD = 0.5;

export type TimestepKind = 'int64' | 'float' | 'float-scalar';

export interface UnetOptions {
  float: FloatType;
  timestep: TimestepKind;
  lcm: boolean;
  batch: Dim;
  height: Dim;
  width: Dim;
  predictionType: 'epsilon' | 'v_prediction';
  seed: number;
}

/** SD's training schedule (scheduler_config.json): scaled_linear betas 0.00085 → 0.012. */
export const NUM_TRAIN_TIMESTEPS = 1000;
const BETA_START = 0.00085;
const BETA_END = 0.012;

export function sqrtOneMinusAlphasCumprod(): Float32Array {
  const out = new Float32Array(NUM_TRAIN_TIMESTEPS);
  let alphaCumprod = 1;
  for (let i = 0; i < NUM_TRAIN_TIMESTEPS; i++) {
    const sqrtBeta = Math.sqrt(BETA_START) + ((Math.sqrt(BETA_END) - Math.sqrt(BETA_START)) * i) / (NUM_TRAIN_TIMESTEPS - 1);
    alphaCumprod *= 1 - sqrtBeta * sqrtBeta;
    out[i] = Math.sqrt(1 - alphaCumprod);
  }
  return out;
}

/**
 * Frequencies of diffusers' `get_timestep_embedding` with flip_sin_to_cos and
 * downscale_freq_shift 0: exp(-ln(10000)·i/half), i < half.
 */
export function timestepFrequencies(dim: number): Float32Array {
  const half = dim / 2;
  return Float32Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / half));
}

export function buildUnet(o: UnetOptions): GraphBuilder {
  const b = new GraphBuilder('unet', { float: o.float, seed: o.seed });
  const C = UNET_CHANNELS;
  const G = UNET_NORM_GROUPS;
  const sample = b.input('sample', o.float, [o.batch, LATENT_CHANNELS, o.height, o.width]);
  const timestep = b.input(
    'timestep',
    o.timestep === 'int64' ? 'int64' : o.float,
    o.timestep === 'float-scalar' ? [] : [o.batch],
  );
  const context = b.input('encoder_hidden_states', o.float, [o.batch, 77, TEXT_HIDDEN_SIZE]);
  const timestepCond = o.lcm ? b.input('timestep_cond', o.float, [o.batch, TIME_COND_DIM]) : undefined;

  // Timestep embedding, computed in float32 like diffusers' time_proj, then cast to the model dtype.
  const t32 = b.op('Cast', [timestep], { to: attr.int(dataTypeOf('float32')) });
  let emb = b.scope('time_proj', () => {
    const t = b.op('Reshape', [t32, b.int64s('column', [-1, 1])]);
    const half = TIME_PROJ_DIM / 2;
    const args = b.op('Mul', [t, b.constant('frequencies', 'float32', [1, half], timestepFrequencies(TIME_PROJ_DIM))]);
    const sinusoid = b.op('Concat', [b.op('Cos', [args]), b.op('Sin', [args])], { axis: attr.int(-1) });
    return o.float === 'float32' ? sinusoid : b.op('Cast', [sinusoid], { to: attr.int(dataTypeOf(o.float)) });
  });
  if (timestepCond) {
    // LCM: the guidance embedding is projected and added before the time MLP (diffusers' cond_proj).
    const cond = b.scope('time_embedding', () =>
      linear(b, 'cond_proj', timestepCond, TIME_COND_DIM, TIME_PROJ_DIM, { bias: false }),
    );
    emb = b.op('Add', [emb, cond]);
  }
  const temb = b.scope('time_embedding', () => {
    const h = silu(b, linear(b, 'linear_1', emb, TIME_PROJ_DIM, TIME_EMBED_DIM));
    return linear(b, 'linear_2', h, TIME_EMBED_DIM, TIME_EMBED_DIM);
  });

  let h = conv2d(b, 'conv_in', sample, LATENT_CHANNELS, C);

  // ResNet block: h + conv(SiLU(GN(conv(SiLU(GN(h))) + proj(temb)))).
  h = b.scope('down_blocks.0', () =>
    b.scope('resnets.0', () => {
      let r = conv2d(b, 'conv1', silu(b, groupNorm(b, 'norm1', h, C, G)), C, C);
      const t = linear(b, 'time_emb_proj', silu(b, temb), TIME_EMBED_DIM, C, { std: 2 / Math.sqrt(TIME_EMBED_DIM) });
      r = b.op('Add', [r, b.op('Unsqueeze', [t, b.int64s('spatial_axes', [2, 3])])]);
      r = conv2d(b, 'conv2', silu(b, groupNorm(b, 'norm2', r, C, G)), C, C);
      return b.op('Add', [h, r]);
    }),
  );

  // Cross-attention block: flattened positions attend to the text states.
  h = b.scope('down_blocks.0', () =>
    b.scope('attentions.0', () => {
      const normed = groupNorm(b, 'norm', h, C, G);
      const tokens = b.op('Transpose', [b.op('Reshape', [normed, b.int64s('flat_shape', [0, 0, -1])])], {
        perm: attr.ints([0, 2, 1]),
      });
      const attended = attention(b, 'attn2', tokens, context, {
        queryDim: C,
        contextDim: TEXT_HIDDEN_SIZE,
        innerDim: ATTENTION_DIM,
        outDim: C,
        qkvBias: false,
        outStd: 3 / Math.sqrt(ATTENTION_DIM),
      });
      const back = b.op('Transpose', [attended], { perm: attr.ints([0, 2, 1]) });
      return b.op('Add', [h, b.op('Reshape', [back, b.op('Shape', [h])])]);
    }),
  );

  const out = silu(b, groupNorm(b, 'conv_norm_out', h, C, G));
  const residual = conv2d(b, 'conv_out', out, C, LATENT_CHANNELS, {
    std: RESIDUAL_STD / Math.sqrt(C * 9),
    ...(o.predictionType === 'epsilon' ? {} : { outputName: 'out_sample' }),
  });
  if (o.predictionType === 'epsilon') {
    // For latents x₀ ~ N(0, I), E[ε | x_t] = √(1-ᾱ_t)·x_t: this exact term keeps samplers'
    // x₀ estimates bounded, as a trained model's would be (for v-prediction E[v | x_t] = 0).
    const coefficient = b.scope('noise_skip', () => {
      const low = b.constant('t_min', 'float32', [], [0]);
      const high = b.constant('t_max', 'float32', [], [NUM_TRAIN_TIMESTEPS - 1]);
      const rounded = b.op('Round', [b.op('Clip', [t32, low, high])]);
      const index = b.op('Cast', [rounded], { to: attr.int(dataTypeOf('int64')) });
      const table = b.constant('sqrt_one_minus_alphas_cumprod', 'float32', [NUM_TRAIN_TIMESTEPS], sqrtOneMinusAlphasCumprod());
      const perSample = b.op('Gather', [table, index], { axis: attr.int(0) });
      const c = b.op('Reshape', [perSample, b.int64s('broadcast_shape', [-1, 1, 1, 1])]);
      return o.float === 'float32' ? c : b.op('Cast', [c], { to: attr.int(dataTypeOf(o.float)) });
    });
    b.op('Add', [b.op('Mul', [sample, coefficient]), residual], {}, 'out_sample');
  }
  b.output('out_sample', o.float, [o.batch, LATENT_CHANNELS, o.height, o.width]);
  return b;
}
