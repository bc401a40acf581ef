/**
 * The JSON files of a diffusers ONNX export, with the values real Stable Diffusion 1.x/2.x
 * exports carry (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1,
 * SimianLuo/LCM_Dreamshaper_v7) and the tiny model's sizes.
 */
import { MAX_POSITIONS, TEXT_HIDDEN_SIZE, TEXT_INTERMEDIATE_SIZE, VOCAB_SIZE } from './text-encoder.js';
import { ATTENTION_DIM, LATENT_CHANNELS, TIME_COND_DIM, UNET_CHANNELS, UNET_NORM_GROUPS } from './unet.js';
import { VAE_CHANNELS, VAE_NORM_GROUPS, VAE_SCALE_FACTOR } from './vae-decoder.js';

export const DIFFUSERS_VERSION = '0.30.3';
const TRANSFORMERS_VERSION = '4.44.2';
export const VAE_SCALING_FACTOR = 0.18215;
const BOS = '<|startoftext|>';
const EOS = '<|endoftext|>';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** JSON as Python's `json.dumps(obj, indent=2, sort_keys=True)` lays it out, plus a newline. */
export function toSortedJson(value: Json): string {
  const sort = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(
        Object.keys(v)
          .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
          .map((k) => [k, sort(v[k]!)]),
      );
    }
    return v;
  };
  return `${JSON.stringify(sort(value), null, 2)}\n`;
}

export interface ConfigOptions {
  dtype: 'float32' | 'float16';
  lcm: boolean;
  predictionType: 'epsilon' | 'v_prediction';
  padWithExclamation: boolean;
  /** The export has safety_checker/ and feature_extractor/. */
  safetyChecker: boolean;
  /** Latent side of the default image (sample_size). */
  latentSize: number;
}

export function modelIndex(o: ConfigOptions): Json {
  return {
    _class_name: 'OnnxStableDiffusionPipeline',
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: o.safetyChecker ? ['transformers', 'CLIPImageProcessor'] : [null, null],
    requires_safety_checker: o.safetyChecker,
    safety_checker: o.safetyChecker ? ['diffusers', 'OnnxRuntimeModel'] : [null, null],
    scheduler: ['diffusers', o.lcm ? 'LCMScheduler' : 'PNDMScheduler'],
    text_encoder: ['diffusers', 'OnnxRuntimeModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ['diffusers', 'OnnxRuntimeModel'],
    vae_decoder: ['diffusers', 'OnnxRuntimeModel'],
    vae_encoder: [null, null],
  };
}

export function schedulerConfig(o: ConfigOptions): Json {
  const common = {
    _diffusers_version: DIFFUSERS_VERSION,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    beta_start: 0.00085,
    clip_sample: false,
    num_train_timesteps: 1000,
    prediction_type: o.predictionType,
    steps_offset: 1,
    timestep_spacing: 'leading',
    trained_betas: null,
  };
  if (o.lcm) {
    return {
      ...common,
      _class_name: 'LCMScheduler',
      clip_sample_range: 1.0,
      dynamic_thresholding_ratio: 0.995,
      original_inference_steps: 50,
      rescale_betas_zero_snr: false,
      sample_max_value: 1.0,
      set_alpha_to_one: true,
      thresholding: false,
      timestep_scaling: 10.0,
    };
  }
  return { ...common, _class_name: 'PNDMScheduler', set_alpha_to_one: false, skip_prk_steps: true };
}

function addedToken(content: string, withType: boolean): Json {
  const token = { content, lstrip: false, normalized: true, rstrip: false, single_word: false };
  return withType ? { __type: 'AddedToken', ...token } : token;
}

export function tokenizerConfig(o: ConfigOptions): Json {
  return {
    add_prefix_space: false,
    bos_token: addedToken(BOS, true),
    do_lower_case: true,
    eos_token: addedToken(EOS, true),
    errors: 'replace',
    model_max_length: MAX_POSITIONS,
    name_or_path: o.padWithExclamation ? 'stabilityai/stable-diffusion-2-1' : 'openai/clip-vit-large-patch14',
    pad_token: o.padWithExclamation ? '!' : EOS,
    special_tokens_map_file: './special_tokens_map.json',
    tokenizer_class: 'CLIPTokenizer',
    unk_token: addedToken(EOS, true),
  };
}

export function specialTokensMap(o: ConfigOptions): Json {
  return {
    bos_token: addedToken(BOS, false),
    eos_token: addedToken(EOS, false),
    pad_token: o.padWithExclamation ? '!' : EOS,
    unk_token: addedToken(EOS, false),
  };
}

export function textEncoderConfig(o: ConfigOptions): Json {
  return {
    _name_or_path: 'tiny-sd/text_encoder',
    architectures: ['CLIPTextModel'],
    attention_dropout: 0.0,
    bos_token_id: 49406,
    dropout: 0.0,
    eos_token_id: 49407,
    hidden_act: 'quick_gelu',
    hidden_size: TEXT_HIDDEN_SIZE,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: TEXT_INTERMEDIATE_SIZE,
    layer_norm_eps: 1e-5,
    max_position_embeddings: MAX_POSITIONS,
    model_type: 'clip_text_model',
    num_attention_heads: 1,
    num_hidden_layers: 1,
    pad_token_id: o.padWithExclamation ? 0 : 49407,
    projection_dim: TEXT_HIDDEN_SIZE,
    torch_dtype: o.dtype,
    transformers_version: TRANSFORMERS_VERSION,
    vocab_size: VOCAB_SIZE,
  };
}

export function unetConfig(o: ConfigOptions): Json {
  return {
    _class_name: 'UNet2DConditionModel',
    _diffusers_version: DIFFUSERS_VERSION,
    act_fn: 'silu',
    attention_head_dim: ATTENTION_DIM,
    block_out_channels: [UNET_CHANNELS],
    center_input_sample: false,
    cross_attention_dim: TEXT_HIDDEN_SIZE,
    down_block_types: ['CrossAttnDownBlock2D'],
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: LATENT_CHANNELS,
    layers_per_block: 1,
    mid_block_type: null,
    norm_eps: 1e-5,
    norm_num_groups: UNET_NORM_GROUPS,
    out_channels: LATENT_CHANNELS,
    sample_size: o.latentSize,
    time_cond_proj_dim: o.lcm ? TIME_COND_DIM : null,
    up_block_types: ['CrossAttnUpBlock2D'],
  };
}

export function vaeDecoderConfig(o: ConfigOptions): Json {
  return {
    _class_name: 'AutoencoderKL',
    _diffusers_version: DIFFUSERS_VERSION,
    act_fn: 'silu',
    block_out_channels: [...VAE_CHANNELS].reverse(),
    in_channels: 3,
    latent_channels: LATENT_CHANNELS,
    layers_per_block: 1,
    norm_num_groups: VAE_NORM_GROUPS,
    out_channels: 3,
    sample_size: o.latentSize * VAE_SCALE_FACTOR,
    scaling_factor: VAE_SCALING_FACTOR,
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  };
}
