/**
 * A small VAE decoder (Kingma & Welling, 2014; the AutoencoderKL decoder of Rombach et al.,
 * 2022): post-quant 1×1 conv, conv_in → GroupNorm → SiLU, three nearest ×2 upsamplings each
 * followed by a 3×3 conv and SiLU, GroupNorm → SiLU → conv_out, and Tanh so pixels stay in
 * [-1, 1] (the real decoder is trained into that range; random weights need the squashing).
 */
import { attr, GraphBuilder, type Dim, type FloatType } from './graph-builder.js';
import { conv2d, groupNorm, silu } from './layers.js';
import { LATENT_CHANNELS } from './unet.js';

export const VAE_SCALE_FACTOR = 8;
/** Channels after conv_in and after each upsampling. */
export const VAE_CHANNELS = [32, 32, 16, 16] as const;
export const VAE_NORM_GROUPS = 8;
/** Upsampling convs: a binomial blur (gain) plus a smaller random part (std × 1/√fan_in). */
const SMOOTH_GAIN = 2;
const SMOOTH_STD = 0.3;

export interface VaeDecoderOptions {
  float: FloatType;
  batch: Dim;
  height: Dim;
  width: Dim;
  /** Names or sizes of the output's spatial dims. */
  outHeight: Dim;
  outWidth: Dim;
  seed: number;
}

export function buildVaeDecoder(o: VaeDecoderOptions): GraphBuilder {
  const b = new GraphBuilder('vae_decoder', { float: o.float, seed: o.seed });
  const latent = b.input('latent_sample', o.float, [o.batch, LATENT_CHANNELS, o.height, o.width]);
  const z = conv2d(b, 'post_quant_conv', latent, LATENT_CHANNELS, LATENT_CHANNELS, { kernel: 1 });

  const image = b.scope('decoder', () => {
    const [c0, ...upChannels] = VAE_CHANNELS;
    let h = silu(b, groupNorm(b, 'norm_in', conv2d(b, 'conv_in', z, LATENT_CHANNELS, c0), c0, VAE_NORM_GROUPS));
    let channels: number = c0;
    upChannels.forEach((next, i) =>
      b.scope(`up_blocks.${i}`, () => {
        // Nearest-neighbour ×2, exported by PyTorch as Resize(asymmetric, floor).
        const scales = b.constant('scales', 'float32', [4], [1, 1, 2, 2]);
        const up = b.op('Resize', [h, '', scales], {
          coordinate_transformation_mode: attr.string('asymmetric'),
          mode: attr.string('nearest'),
          nearest_mode: attr.string('floor'),
        });
        const std = SMOOTH_STD / Math.sqrt(channels * 9);
        h = silu(b, conv2d(b, 'upsamplers.0.conv', up, channels, next, { std, smoothing: SMOOTH_GAIN }));
        channels = next;
      }),
    );
    h = silu(b, groupNorm(b, 'conv_norm_out', h, channels, VAE_NORM_GROUPS));
    const rgb = conv2d(b, 'conv_out', h, channels, 3, { std: 1.2 / Math.sqrt(channels * 9) });
    return b.op('Tanh', [rgb], {}, 'sample');
  });
  b.output(image, o.float, [o.batch, 3, o.outHeight, o.outWidth]);
  return b;
}
