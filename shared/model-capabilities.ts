import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { SCHEDULER_CLASS } from './job-schema.js';
import { ONNX_ELEM_TYPES, OnnxFormatError, readOnnxInputs, type OnnxDim, type OnnxInput } from './onnx-graph-inputs.js';

/**
 * What a Stable Diffusion export can do, read from the export itself: its config files and the
 * declared input shapes of its ONNX graphs (never a session, so it is cheap enough for the API
 * to call at boot for every model it serves). The worker's pipeline derives the same numbers from
 * its ONNX Runtime sessions when it loads the model, and checks every job against them again;
 * test/model-capabilities.test.ts keeps the two readings equal.
 */
export interface ModelCapabilities {
  /** The export folder's name; a service may serve it under another name (MODEL_NAME). */
  name: string;
  /** Image sides must be multiples of this: the VAE's downscale factor. */
  sizeMultiple: number;
  minSize: number;
  maxSize: number;
  /** The size a request without one gets: the UNet's `sample_size` × the downscale factor. */
  defaultSize: number;
  /** Set when the export has static spatial shapes: the only size it takes. */
  fixedSize?: { width: number; height: number };
  /** Set when the export's batch dimension is static (images then run one at a time). */
  fixedBatch?: number;
  /** diffusers class name of the export's own scheduler. */
  defaultScheduler: string;
  dtype: 'float32' | 'float16';
  /**
   * The most denoising steps a run may take, by diffusers scheduler class: the noise schedule's
   * `num_train_timesteps`, and for LCMScheduler its distillation's `original_inference_steps`.
   */
  maxStepsByScheduler: Readonly<Record<string, number>>;
  /**
   * The image filters every worker of this export has (`nsfw` when it has a safety checker,
   * `grayscale` always) and those that run when a request names none. Filters an operator's
   * FILTER_MODULES add are known to the workers only.
   */
  filters: { available: string[]; defaults: string[] };
}

/** An export the API cannot read; `file` names the file at fault. */
export class ModelCapabilitiesError extends Error {
  /** The catalogue model whose export it is, once known. */
  model: string | undefined;
  constructor(
    message: string,
    readonly file: string,
  ) {
    super(message);
    this.name = 'ModelCapabilitiesError';
  }
}

/** The pipeline's bounds on a dynamic-size export (worker/pipeline/pipeline.ts MIN_SIZE, MAX_SIZE). */
const MIN_SIZE = 64;
const MAX_SIZE = 2048;
/** SD 1.x's values when a config file leaves them out (as the pipeline assumes). */
const DEFAULT_VAE_SCALE_FACTOR = 8;
const DEFAULT_TRAIN_TIMESTEPS = 1000;
/** diffusers' LCMScheduler default for `original_inference_steps`. */
const DEFAULT_LCM_ORIGINAL_STEPS = 50;
/** The scheduler classes the pipeline implements: those a request may name. */
const SCHEDULER_CLASSES = [...new Set(Object.values(SCHEDULER_CLASS))];

const FILES = {
  modelIndex: 'model_index.json',
  schedulerConfig: 'scheduler/scheduler_config.json',
  unetConfig: 'unet/config.json',
  vaeConfig: 'vae_decoder/config.json',
  safetyChecker: 'safety_checker/model.onnx',
  textEncoder: 'text_encoder/model.onnx',
  unet: 'unet/model.onnx',
  vaeDecoder: 'vae_decoder/model.onnx',
} as const;

async function readJson(modelDir: string, file: string, required: boolean): Promise<Record<string, unknown> | undefined> {
  const full = path.join(modelDir, file);
  if (!existsSync(full)) {
    if (required) throw new ModelCapabilitiesError(`Model file ${file} is missing in ${modelDir}`, file);
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(await readFile(full, 'utf8'));
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw new ModelCapabilitiesError(`Model file ${file} is not valid JSON: ${(err as Error).message}`, file);
  }
}

async function graphInputs(modelDir: string, file: string): Promise<Map<string, OnnxInput>> {
  const full = path.join(modelDir, file);
  if (!existsSync(full)) throw new ModelCapabilitiesError(`Model file ${file} is missing in ${modelDir}`, file);
  try {
    return (await readOnnxInputs(full)).inputs;
  } catch (err) {
    if (err instanceof OnnxFormatError) throw new ModelCapabilitiesError(err.message, file);
    throw err;
  }
}

const numberField = (config: Record<string, unknown> | undefined, key: string) => {
  const value = config?.[key];
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
};

const staticDim = (shape: readonly OnnxDim[] | null | undefined, axis: number) => {
  const dim = shape?.[axis];
  return typeof dim === 'number' && dim > 0 ? dim : undefined;
};

/**
 * Reads `modelDir` (a diffusers/optimum ONNX export) and says what it can do. A pure function of
 * the folder: the same export gives the same answer, whoever calls it.
 */
export async function readModelCapabilities(modelDir: string): Promise<ModelCapabilities> {
  await readJson(modelDir, FILES.modelIndex, true);
  const scheduler = (await readJson(modelDir, FILES.schedulerConfig, true)) as Record<string, unknown>;
  const unetConfig = await readJson(modelDir, FILES.unetConfig, false);
  const vaeConfig = await readJson(modelDir, FILES.vaeConfig, false);
  const schedulerClass = scheduler['_class_name'];
  if (typeof schedulerClass !== 'string') {
    throw new ModelCapabilitiesError(`${FILES.schedulerConfig} has no _class_name`, FILES.schedulerConfig);
  }

  const [textEncoder, unet, vaeDecoder] = await Promise.all([
    graphInputs(modelDir, FILES.textEncoder),
    graphInputs(modelDir, FILES.unet),
    graphInputs(modelDir, FILES.vaeDecoder),
  ]);
  const sample = unet.get('sample');
  if (!sample) throw new ModelCapabilitiesError(`${FILES.unet} has no input "sample"`, FILES.unet);
  const dtype = ONNX_ELEM_TYPES[sample.elemType];
  if (dtype !== 'float32' && dtype !== 'float16') {
    throw new ModelCapabilitiesError(`${FILES.unet}: input "sample" has type ${dtype ?? sample.elemType}, expected float32 or float16`, FILES.unet);
  }

  // diffusers: vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
  const blocks = vaeConfig?.['block_out_channels'];
  const scale = Array.isArray(blocks) && blocks.length > 0 ? 2 ** (blocks.length - 1) : DEFAULT_VAE_SCALE_FACTOR;
  const h = staticDim(sample.shape, 2);
  const w = staticDim(sample.shape, 3);
  const fixedSize = h !== undefined && w !== undefined ? { width: w * scale, height: h * scale } : undefined;
  const fixedBatch =
    staticDim(sample.shape, 0) ?? staticDim(textEncoder.get('input_ids')?.shape, 0) ?? staticDim(vaeDecoder.get('latent_sample')?.shape, 0);
  const sampleSize = numberField(unetConfig, 'sample_size');
  const defaultSize = fixedSize?.width ?? (sampleSize !== undefined ? sampleSize * scale : 512);

  const trainTimesteps = numberField(scheduler, 'num_train_timesteps') ?? DEFAULT_TRAIN_TIMESTEPS;
  // Another class swapped in keeps the model's config keys (diffusers' from_config), LCM's included;
  // an original_inference_steps LCM cannot take (past the schedule) leaves LCM no steps at all.
  const lcmOriginal = numberField(scheduler, 'original_inference_steps') ?? DEFAULT_LCM_ORIGINAL_STEPS;
  const lcmSteps = Number.isInteger(lcmOriginal) && lcmOriginal >= 1 && lcmOriginal <= trainTimesteps ? lcmOriginal : 0;
  const maxStepsByScheduler: Record<string, number> = {};
  for (const name of SCHEDULER_CLASSES) maxStepsByScheduler[name] = name === 'LCMScheduler' ? lcmSteps : trainTimesteps;

  return {
    name: path.basename(path.resolve(modelDir)),
    sizeMultiple: scale,
    minSize: fixedSize ? Math.min(fixedSize.width, fixedSize.height) : Math.max(MIN_SIZE, scale),
    maxSize: fixedSize ? Math.max(fixedSize.width, fixedSize.height) : Math.max(MAX_SIZE, defaultSize),
    defaultSize,
    ...(fixedSize ? { fixedSize } : {}),
    ...(fixedBatch !== undefined ? { fixedBatch } : {}),
    defaultScheduler: schedulerClass,
    dtype,
    maxStepsByScheduler,
    // The worker loads a safety checker exactly when its model.onnx is there (it warns when
    // model_index.json lists one that is missing).
    filters: existsSync(path.join(modelDir, FILES.safetyChecker))
      ? { available: ['nsfw', 'grayscale'], defaults: ['nsfw'] }
      : { available: ['grayscale'], defaults: [] },
  };
}

/** What a request asks of a model, normalised (the job payload's fields). */
export interface ModelRequest {
  width: number;
  height: number;
  numInferenceSteps: number;
  /** The diffusers class it runs with: the request's choice, else undefined for the model's own. */
  schedulerClass: string | undefined;
}

/**
 * Why `model` cannot run `request`, field by field (empty when it can): the same rules the
 * worker's pipeline applies, so that nothing the worker would refuse is ever queued. `sizeField`
 * names the field a client set the size with (`img_size` or `width`/`height`).
 */
export function modelProblems(
  model: ModelCapabilities,
  request: ModelRequest,
  sizeField: (side: 'width' | 'height') => string = (side) => side,
): { field: string; message: string }[] {
  const problems: { field: string; message: string }[] = [];
  for (const side of ['width', 'height'] as const) {
    const value = request[side];
    const named = sizeField(side);
    const fixed = model.fixedSize?.[side];
    if (fixed !== undefined && value !== fixed) {
      problems.push({ field: named, message: `${named} must be ${fixed}: this model's export has a fixed ${side}` });
    } else if (value % model.sizeMultiple !== 0 || value < model.minSize || value > model.maxSize) {
      problems.push({ field: named, message: `${named} must be a multiple of ${model.sizeMultiple} between ${model.minSize} and ${model.maxSize} for this model` });
    }
    if (problems.length > 0 && named === sizeField(side === 'width' ? 'height' : 'width')) break; // img_size: say it once
  }
  const schedulerClass = request.schedulerClass ?? model.defaultScheduler;
  const maxSteps = model.maxStepsByScheduler[schedulerClass];
  if (maxSteps === undefined) {
    problems.push({ field: 'scheduler', message: `this model's scheduler ${schedulerClass} is not supported; choose a scheduler` });
  } else if (maxSteps === 0) {
    problems.push({ field: 'scheduler', message: `${schedulerClass} cannot run with this model's scheduler config; choose another scheduler` });
  } else if (request.numInferenceSteps > maxSteps) {
    problems.push({ field: 'num_inference_steps', message: `num_inference_steps must be at most ${maxSteps} with ${schedulerClass} on this model` });
  }
  return problems;
}
