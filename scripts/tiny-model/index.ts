/**
 * Writes a tiny random-weight Stable Diffusion in the diffusers/optimum ONNX export layout:
 * the same files, tensor names, dtypes and dynamic dims as a real export, a few hundred KB of
 * weights, deterministic to the byte. Used by tests and by `npm start` when no model is there.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  modelIndex,
  schedulerConfig,
  specialTokensMap,
  textEncoderConfig,
  tokenizerConfig,
  toSortedJson,
  unetConfig,
  vaeDecoderConfig,
  type ConfigOptions,
} from './configs.js';
import type { Dim, GraphBuilder } from './graph-builder.js';
import { buildSafetyChecker, preprocessorConfig, type SafetyCheckerKind } from './safety-checker.js';
import { buildTextEncoder } from './text-encoder.js';
import { buildUnet } from './unet.js';
import { buildVaeDecoder, VAE_SCALE_FACTOR } from './vae-decoder.js';

export interface TinyModelOptions {
  /** All float inputs, outputs and weights (default float32). */
  dtype?: 'float32' | 'float16';
  /** text_encoder input_ids dtype (default int32, like optimum). */
  inputIds?: 'int32' | 'int64';
  /** unet timestep: int64 [batch] (default), float [batch] in the model dtype, or a float scalar. */
  timestep?: 'int64' | 'float' | 'float-scalar';
  /** Where unet weights go: inline, unet/model.onnx_data (default, like real exports), unet/weights.pb. */
  externalData?: 'none' | 'onnx_data' | 'weights.pb';
  /** unet takes `timestep_cond` float [batch, 256] (LCM guidance embedding); LCMScheduler config. */
  lcm?: boolean;
  predictionType?: 'epsilon' | 'v_prediction';
  /** SD 2.x tokenizer: pad with "!" (default SD 1.x: pad with <|endoftext|>). */
  padWithExclamation?: boolean;
  /** Static image side in pixels (latent side = fixedSize / 8) instead of dynamic dims. */
  fixedSize?: number;
  /** Static batch dim instead of a dynamic one. */
  fixedBatch?: number;
  /**
   * safety_checker/ + feature_extractor/ with diffusers' ONNX interface: `pass-all` (default) flags
   * no image, `flag-all` flags every one, `none` leaves them out (as exports without a checker).
   */
  safetyChecker?: 'none' | SafetyCheckerKind;
  /** Weight seed (default fixed). */
  seed?: number;
}

export const TINY_MODEL_NOTE =
  'This tiny Stable Diffusion has random weights and exists for tests (its images are abstract patterns); for real images, export a checkpoint with `optimum-cli export onnx --model runwayml/stable-diffusion-v1-5 <dir>` and set MODEL_DIR to that directory.';

export const DEFAULT_TINY_MODEL_DIR = 'models/tiny-sd';
export const DEFAULT_TINY_MODEL_SEED = 42;
/** unet config sample_size for dynamic exports: 8 latents → 64 px default images. */
const DEFAULT_LATENT_SIZE = 8;

const TOKENIZER_ASSETS = fileURLToPath(new URL('../../assets/clip-tokenizer/', import.meta.url));
const EXTERNAL_FILES = { onnx_data: 'model.onnx_data', 'weights.pb': 'weights.pb' } as const;

export type ResolvedTinyModelOptions = Required<Omit<TinyModelOptions, 'fixedSize' | 'fixedBatch'>> &
  Pick<TinyModelOptions, 'fixedSize' | 'fixedBatch'>;

function oneOf<T extends string>(name: string, value: T | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value)) throw new RangeError(`${name} must be one of ${allowed.join(', ')}; got ${String(value)}`);
  return value;
}

/** Fills in defaults and rejects values the generator cannot honour. */
export function resolveTinyModelOptions(options: TinyModelOptions = {}): ResolvedTinyModelOptions {
  const { fixedSize, fixedBatch, seed = DEFAULT_TINY_MODEL_SEED } = options;
  if (fixedSize !== undefined && (!Number.isInteger(fixedSize) || fixedSize < 8 || fixedSize % 8 !== 0)) {
    throw new RangeError(`fixedSize must be a positive multiple of 8; got ${fixedSize}`);
  }
  if (fixedBatch !== undefined && (!Number.isInteger(fixedBatch) || fixedBatch < 1)) {
    throw new RangeError(`fixedBatch must be a positive integer; got ${fixedBatch}`);
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new RangeError(`seed must be an integer in [0, 2^32); got ${seed}`);
  }
  return {
    dtype: oneOf('dtype', options.dtype, ['float32', 'float16'], 'float32'),
    inputIds: oneOf('inputIds', options.inputIds, ['int32', 'int64'], 'int32'),
    timestep: oneOf('timestep', options.timestep, ['int64', 'float', 'float-scalar'], 'int64'),
    externalData: oneOf('externalData', options.externalData, ['none', 'onnx_data', 'weights.pb'], 'onnx_data'),
    lcm: options.lcm ?? false,
    predictionType: oneOf('predictionType', options.predictionType, ['epsilon', 'v_prediction'], 'epsilon'),
    padWithExclamation: options.padWithExclamation ?? false,
    safetyChecker: oneOf('safetyChecker', options.safetyChecker, ['none', 'pass-all', 'flag-all'], 'pass-all'),
    fixedSize,
    fixedBatch,
    seed,
  };
}

async function writeJson(file: string, value: Parameters<typeof toSortedJson>[0]): Promise<void> {
  await writeFile(file, toSortedJson(value));
}

async function writeGraph(dir: string, graph: GraphBuilder, externalFile?: string): Promise<void> {
  const { model, externalData } = graph.serialize({
    docString: TINY_MODEL_NOTE,
    ...(externalFile ? { external: { location: externalFile } } : {}),
  });
  await writeFile(path.join(dir, 'model.onnx'), model);
  if (externalFile && externalData) await writeFile(path.join(dir, externalFile), externalData);
}

/** Writes the model into `dir` (created if needed; files of the layout are overwritten). */
export async function writeTinyModel(dir: string, options: TinyModelOptions = {}): Promise<void> {
  const o = resolveTinyModelOptions(options);
  const latent: Dim = o.fixedSize === undefined ? 'height' : o.fixedSize / VAE_SCALE_FACTOR;
  const batch: Dim = o.fixedBatch ?? 'batch';
  const height = latent;
  const width: Dim = o.fixedSize === undefined ? 'width' : latent;
  const config: ConfigOptions = {
    dtype: o.dtype,
    lcm: o.lcm,
    predictionType: o.predictionType,
    padWithExclamation: o.padWithExclamation,
    safetyChecker: o.safetyChecker !== 'none',
    latentSize: o.fixedSize === undefined ? DEFAULT_LATENT_SIZE : o.fixedSize / VAE_SCALE_FACTOR,
  };
  const sub = (name: string) => path.join(dir, name);
  for (const name of ['scheduler', 'tokenizer', 'text_encoder', 'unet', 'vae_decoder']) {
    await mkdir(sub(name), { recursive: true });
  }

  await writeJson(path.join(dir, 'model_index.json'), modelIndex(config));
  await writeJson(path.join(sub('scheduler'), 'scheduler_config.json'), schedulerConfig(config));

  for (const file of ['vocab.json', 'merges.txt', 'LICENSE']) {
    await copyFile(path.join(TOKENIZER_ASSETS, file), path.join(sub('tokenizer'), file));
  }
  await writeJson(path.join(sub('tokenizer'), 'tokenizer_config.json'), tokenizerConfig(config));
  await writeJson(path.join(sub('tokenizer'), 'special_tokens_map.json'), specialTokensMap(config));

  const float = o.dtype;
  await writeGraph(sub('text_encoder'), buildTextEncoder({ float, inputIds: o.inputIds, batch, seed: o.seed }));
  await writeJson(path.join(sub('text_encoder'), 'config.json'), textEncoderConfig(config));

  // A stale weights file from other options would be misleading beside the new graph.
  for (const file of Object.values(EXTERNAL_FILES)) await rm(path.join(sub('unet'), file), { force: true });
  const unet = buildUnet({
    float,
    timestep: o.timestep,
    lcm: o.lcm,
    predictionType: o.predictionType,
    batch,
    height,
    width,
    seed: o.seed,
  });
  await writeGraph(sub('unet'), unet, o.externalData === 'none' ? undefined : EXTERNAL_FILES[o.externalData]);
  await writeJson(path.join(sub('unet'), 'config.json'), unetConfig(config));

  const outSide = (d: Dim, name: string): Dim => (typeof d === 'number' ? d * VAE_SCALE_FACTOR : name);
  const vae = buildVaeDecoder({
    float,
    batch,
    height,
    width,
    outHeight: outSide(height, 'image_height'),
    outWidth: outSide(width, 'image_width'),
    seed: o.seed,
  });
  await writeGraph(sub('vae_decoder'), vae);
  await writeJson(path.join(sub('vae_decoder'), 'config.json'), vaeDecoderConfig(config));

  // Rewriting a folder without a checker removes the one a previous run left there.
  for (const name of ['safety_checker', 'feature_extractor']) await rm(sub(name), { recursive: true, force: true });
  if (o.safetyChecker !== 'none') {
    for (const name of ['safety_checker', 'feature_extractor']) await mkdir(sub(name), { recursive: true });
    await writeGraph(sub('safety_checker'), buildSafetyChecker({ float, kind: o.safetyChecker, batch, seed: o.seed }));
    await writeJson(path.join(sub('feature_extractor'), 'preprocessor_config.json'), preprocessorConfig());
  }
}

/**
 * `npm start`'s first step: every catalogue model whose folder holds no `model_index.json` and
 * that is a tiny one (`tinySeed`: the two built-in models, or MODEL_DIR with MODEL_AUTO_TINY) is
 * written, with its own weight seed. Resolves with the first model that is missing and may not be
 * written (a real export not there), or null.
 */
export async function writeMissingTinyModels(
  config: { models: readonly { name: string; dir: string; triggerWords: string[]; tinySeed?: number }[]; model: { autoTiny: boolean } },
  logger: { warn(fields: object, message: string): void },
): Promise<{ name: string; dir: string } | null> {
  for (const model of config.models) {
    if (existsSync(path.join(model.dir, 'model_index.json'))) continue;
    if (!config.model.autoTiny || model.tinySeed === undefined) return model;
    logger.warn(
      { model: model.name, modelDir: model.dir, triggerWords: model.triggerWords },
      `no model found: writing the tiny random-weight test model ${model.name} (weight seed ${model.tinySeed}). ${TINY_MODEL_NOTE}`,
    );
    await writeTinyModel(model.dir, { seed: model.tinySeed });
  }
  return null;
}
