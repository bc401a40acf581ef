/**
 * Stable Diffusion text-to-image on ONNX Runtime, after diffusers'
 * `OnnxStableDiffusionPipeline` (pipeline_onnx_stable_diffusion.py):
 *
 *   checkInputs → encodePrompt → prepareLatents → denoise → decode → toImage
 *
 * Everything model-specific — tensor names, dtypes, static shapes, the VAE scaling factor, the
 * latent channels and downscale factor — is read from the export (sessions and config files) at
 * load time, validated once, and fails loudly with the file and tensor at fault.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Tensor } from 'onnxruntime-node';
import {
  ModelLoadError,
  openOnnxModel,
  resolveExecutionProvider,
  staticDim,
  type OnnxModel,
  type ProviderOptions,
  type TensorSpec,
} from './onnx-session.js';
import { applyGuidance, ArenaPool, type KernelArena, rgbFloats, toRgb8 } from './kernels/index.js';
import { NumpyRandomState } from './randn.js';
import { batchOf, BatchedInput, runRows, TimestepInput, type Batch } from './session-feeds.js';
import { OnnxSafetyChecker } from './safety-checker.js';
import { createScheduler, resolveScheduler, SchedulerConfigError } from './schedulers/index.js';
import { ClipTokenizer } from './tokenizer.js';
import { describeWebGpuAdapter } from './webgpu-device.js';
import type {
  GenerateOptions,
  GenerateRequest,
  ModelCapabilities,
  Pipeline,
  RgbImage,
  Scheduler,
  SchedulerConfig,
  StageTimings,
} from './types.js';

export { ModelLoadError } from './onnx-session.js';
export type { ExecutionProvider, PipelineLogger, WebGpuLayout } from './onnx-session.js';

/** `provider` (default cpu), `deviceId`, `cpuThreads`, `webgpuLayout`, `allowCpuFallback`, `logger`. */
export type LoadPipelineOptions = ProviderOptions;

/** A request the model cannot serve; `field` names the request field at fault. No retry. */
export class InvalidRequestError extends Error {
  override readonly name = 'InvalidRequestError';
  readonly code = 'invalid_request';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** The caller's AbortSignal fired; named `AbortError` like the platform's own aborts. */
export class JobCanceledError extends Error {
  override readonly name = 'AbortError';
  readonly code = 'canceled';
  constructor(message = 'Generation canceled') {
    super(message);
  }
}

const FILES = {
  modelIndex: 'model_index.json',
  schedulerConfig: 'scheduler/scheduler_config.json',
  tokenizerDir: 'tokenizer',
  vocab: 'tokenizer/vocab.json',
  merges: 'tokenizer/merges.txt',
  textEncoder: 'text_encoder/model.onnx',
  unet: 'unet/model.onnx',
  unetConfig: 'unet/config.json',
  vaeDecoder: 'vae_decoder/model.onnx',
  vaeConfig: 'vae_decoder/config.json',
} as const;

/** Defaults of SD 1.x when a config file leaves them out. */
const DEFAULT_VAE_SCALING_FACTOR = 0.18215;
const DEFAULT_VAE_SCALE_FACTOR = 8;
const DEFAULT_LATENT_CHANNELS = 4;
const DEFAULT_GUIDANCE_EMBEDDING_DIM = 256;
const MIN_SIZE = 64;
const MAX_SIZE = 2048;
const MAX_IMAGES = 16;
const MAX_SEED = 2 ** 32 - 1; // numpy RandomState seeds are uint32

/** Latent-sized arrays a scheduler keeps between steps (PNDM: four ε, the refined sample, ε′). */
const SCHEDULER_STATE_ARRAYS = 6;

// ---------------------------------------------------------------------------------------------
// Loading and validation

interface ModelConfig {
  name: string;
  schedulerClass: string;
  schedulerConfig: SchedulerConfig;
  /** Latents are divided by this before decoding (`vae.config.scaling_factor`). */
  vaeScalingFactor: number;
  /** Pixels per latent cell: 2^(len(vae.block_out_channels) − 1). */
  vaeScaleFactor: number;
  latentChannels: number;
  /** `unet.config.sample_size` in latent cells, when given. */
  sampleSize: number | undefined;
  guidanceEmbeddingDim: number | undefined;
  trainTimesteps: number;
  /** model_index.json names a safety checker (diffusers would load one). */
  safetyCheckerListed: boolean;
}

/** The tensors the pipeline feeds and fetches, as the sessions declare them. */
interface Graph {
  textEncoder: OnnxModel;
  unet: OnnxModel;
  vaeDecoder: OnnxModel;
  inputIds: TensorSpec;
  lastHiddenState: TensorSpec;
  sample: TensorSpec;
  timestep: TensorSpec;
  encoderHiddenStates: TensorSpec;
  timestepCond: TensorSpec | undefined;
  outSample: TensorSpec;
  latentSample: TensorSpec;
  decoded: TensorSpec;
}

/** Fails with the first of `files` missing in the export, before anything heavy is loaded. */
function requireFiles(modelDir: string, files: readonly string[]): void {
  for (const file of files) {
    if (!existsSync(path.join(modelDir, file))) throw new ModelLoadError(`Model file ${file} is missing in ${modelDir}`, { file });
  }
}

async function readJson(modelDir: string, file: string, required: boolean): Promise<Record<string, unknown> | undefined> {
  const fullPath = path.join(modelDir, file);
  if (required) requireFiles(modelDir, [file]);
  else if (!existsSync(fullPath)) return undefined;
  try {
    const value: unknown = JSON.parse(await readFile(fullPath, 'utf8'));
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (error) {
    throw new ModelLoadError(`Model file ${file} is not valid JSON: ${(error as Error).message}`, { file, cause: error });
  }
}

function numberField(config: Record<string, unknown> | undefined, key: string): number | undefined {
  const value = config?.[key];
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

async function readModelConfig(modelDir: string): Promise<ModelConfig> {
  const modelIndex = (await readJson(modelDir, FILES.modelIndex, true))!;
  const schedulerConfig = (await readJson(modelDir, FILES.schedulerConfig, true))!;
  const unetConfig = await readJson(modelDir, FILES.unetConfig, false);
  const vaeConfig = await readJson(modelDir, FILES.vaeConfig, false);

  const schedulerClass = schedulerConfig['_class_name'];
  if (typeof schedulerClass !== 'string') {
    throw new ModelLoadError(`${FILES.schedulerConfig} has no _class_name`, { file: FILES.schedulerConfig });
  }
  // diffusers: vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1). The UNet's
  // block_out_channels count its own levels, not the VAE's: never a substitute.
  const blocks = vaeConfig?.['block_out_channels'];
  const vaeScaleFactor = Array.isArray(blocks) && blocks.length > 0 ? 2 ** (blocks.length - 1) : DEFAULT_VAE_SCALE_FACTOR;
  return {
    name: path.basename(path.resolve(modelDir)),
    schedulerClass,
    schedulerConfig,
    vaeScalingFactor: numberField(vaeConfig, 'scaling_factor') ?? DEFAULT_VAE_SCALING_FACTOR,
    vaeScaleFactor,
    latentChannels:
      numberField(unetConfig, 'in_channels') ?? numberField(vaeConfig, 'latent_channels') ?? DEFAULT_LATENT_CHANNELS,
    sampleSize: numberField(unetConfig, 'sample_size'),
    guidanceEmbeddingDim: numberField(unetConfig, 'time_cond_proj_dim'),
    trainTimesteps: numberField(schedulerConfig, 'num_train_timesteps') ?? 1000,
    safetyCheckerListed: Array.isArray(modelIndex['safety_checker']) && modelIndex['safety_checker'][0] != null,
  };
}

const FLOAT_TYPES: readonly Tensor.Type[] = ['float32', 'float16'];
const INT_TYPES: readonly Tensor.Type[] = ['int32', 'int64'];
const TIMESTEP_TYPES: readonly Tensor.Type[] = ['int64', 'int32', 'float32', 'float16', 'float64'];

function tensorOf(
  model: OnnxModel,
  kind: 'input' | 'output',
  name: string,
  ranks: readonly number[],
  types: readonly Tensor.Type[],
): TensorSpec {
  const specs = kind === 'input' ? model.inputs : model.outputs;
  const spec = specs.get(name);
  if (spec && !spec.declared) {
    // No metadata from this ONNX Runtime: assume what diffusers/optimum exports declare.
    return { name, type: types[0]!, shape: Array.from({ length: ranks[0]! }, (_, i) => `${name}_${i}`), declared: false };
  }
  if (!spec) {
    const has = [...specs.keys()].join(', ') || 'none';
    throw new ModelLoadError(`${model.file} has no ${kind} tensor "${name}" (its ${kind}s: ${has})`, {
      file: model.file,
      tensor: name,
    });
  }
  if (!ranks.includes(spec.shape.length)) {
    throw new ModelLoadError(
      `${model.file}: ${kind} "${name}" has rank ${spec.shape.length} [${spec.shape.join(', ')}], expected rank ${ranks.join(' or ')}`,
      { file: model.file, tensor: name },
    );
  }
  if (!types.includes(spec.type)) {
    throw new ModelLoadError(`${model.file}: ${kind} "${name}" has type ${spec.type}, expected ${types.join(' or ')}`, {
      file: model.file,
      tensor: name,
    });
  }
  return spec;
}

function expectDim(model: OnnxModel, spec: TensorSpec, axis: number, expected: number | undefined, what: string): void {
  const actual = staticDim(spec, axis);
  if (actual !== undefined && expected !== undefined && actual !== expected) {
    throw new ModelLoadError(
      `${model.file}: "${spec.name}" dimension ${axis} is ${actual} but ${what} is ${expected}`,
      { file: model.file, tensor: spec.name },
    );
  }
}

function validateGraph(textEncoder: OnnxModel, unet: OnnxModel, vaeDecoder: OnnxModel, config: ModelConfig, seqLen: number): Graph {
  const inputIds = tensorOf(textEncoder, 'input', 'input_ids', [2], INT_TYPES);
  const lastHiddenState = tensorOf(textEncoder, 'output', 'last_hidden_state', [3], FLOAT_TYPES);
  const sample = tensorOf(unet, 'input', 'sample', [4], FLOAT_TYPES);
  const timestep = tensorOf(unet, 'input', 'timestep', [1, 0], TIMESTEP_TYPES);
  const encoderHiddenStates = tensorOf(unet, 'input', 'encoder_hidden_states', [3], FLOAT_TYPES);
  const timestepCond = unet.inputs.has('timestep_cond')
    ? tensorOf(unet, 'input', 'timestep_cond', [2], FLOAT_TYPES)
    : undefined;
  const outSample = tensorOf(unet, 'output', 'out_sample', [4], FLOAT_TYPES);
  const latentSample = tensorOf(vaeDecoder, 'input', 'latent_sample', [4], FLOAT_TYPES);
  const decoded = tensorOf(vaeDecoder, 'output', 'sample', [4], FLOAT_TYPES);

  for (const name of unet.inputs.keys()) {
    if (!['sample', 'timestep', 'encoder_hidden_states', 'timestep_cond'].includes(name)) {
      throw new ModelLoadError(`${unet.file} has an input "${name}" this pipeline cannot feed`, { file: unet.file, tensor: name });
    }
  }
  for (const name of textEncoder.inputs.keys()) {
    if (name !== 'input_ids') {
      throw new ModelLoadError(`${textEncoder.file} has an input "${name}" this pipeline cannot feed`, {
        file: textEncoder.file,
        tensor: name,
      });
    }
  }

  // The text encoder's states feed the UNet's cross-attention: same length, same width.
  expectDim(textEncoder, inputIds, 1, seqLen, 'the tokenizer max length');
  expectDim(unet, encoderHiddenStates, 1, seqLen, 'the tokenizer max length');
  const hidden = staticDim(lastHiddenState, 2);
  const crossAttention = staticDim(encoderHiddenStates, 2);
  if (hidden !== undefined && crossAttention !== undefined && hidden !== crossAttention) {
    throw new ModelLoadError(
      `Text encoder hidden size ${hidden} (${textEncoder.file} "last_hidden_state") does not match the UNet's ` +
        `${crossAttention} (${unet.file} "encoder_hidden_states")`,
      { file: unet.file, tensor: 'encoder_hidden_states' },
    );
  }
  // Latents flow UNet → UNet → VAE decoder with the same channels and spatial size.
  expectDim(unet, sample, 1, config.latentChannels, 'the latent channels');
  expectDim(unet, outSample, 1, config.latentChannels, 'the latent channels');
  expectDim(vaeDecoder, latentSample, 1, config.latentChannels, 'the latent channels');
  expectDim(vaeDecoder, latentSample, 2, staticDim(sample, 2), `${unet.file} "sample" height`);
  expectDim(vaeDecoder, latentSample, 3, staticDim(sample, 3), `${unet.file} "sample" width`);
  expectDim(vaeDecoder, decoded, 1, 3, 'the RGB channels');
  if (timestepCond) expectDim(unet, timestepCond, 1, config.guidanceEmbeddingDim, 'unet/config.json time_cond_proj_dim');

  return {
    textEncoder,
    unet,
    vaeDecoder,
    inputIds,
    lastHiddenState,
    sample,
    timestep,
    encoderHiddenStates,
    timestepCond,
    outSample,
    latentSample,
    decoded,
  };
}

async function loadTokenizer(modelDir: string): Promise<ClipTokenizer> {
  requireFiles(modelDir, [FILES.vocab, FILES.merges]);
  try {
    return await ClipTokenizer.fromDir(path.join(modelDir, FILES.tokenizerDir));
  } catch (error) {
    throw new ModelLoadError(`Could not read the tokenizer in ${FILES.tokenizerDir}/: ${(error as Error).message}`, {
      file: FILES.tokenizerDir,
      cause: error,
    });
  }
}

/**
 * Loads and validates a diffusers/optimum ONNX export. Sessions are created once here and
 * reused by every `generate`.
 */
export async function loadPipeline(modelDir: string, options: LoadPipelineOptions = {}): Promise<Pipeline> {
  const config = await readModelConfig(modelDir);
  const tokenizer = await loadTokenizer(modelDir);
  const modelFiles = [FILES.textEncoder, FILES.unet, FILES.vaeDecoder] as const;
  requireFiles(modelDir, modelFiles);
  const provider = resolveExecutionProvider(options);
  const opened: OnnxModel[] = [];
  let safetyChecker: OnnxSafetyChecker | undefined;
  try {
    for (const file of modelFiles) {
      opened.push(await openOnnxModel(modelDir, file, provider, options));
    }
    const [textEncoder, unet, vaeDecoder] = opened as [OnnxModel, OnnxModel, OnnxModel];
    const graph = validateGraph(textEncoder, unet, vaeDecoder, config, tokenizer.maxLength);
    safetyChecker = await OnnxSafetyChecker.load(modelDir, provider, options, config.safetyCheckerListed);
    options.logger?.info(
      { model: config.name, provider: unet.provider, dtype: graph.sample.type, safetyChecker: safetyChecker !== undefined, ...(await adapterFields(opened)) },
      'Stable Diffusion pipeline loaded',
    );
    return new OnnxStableDiffusionPipeline(config, tokenizer, graph, safetyChecker);
  } catch (error) {
    await Promise.allSettled([...opened.map((model) => model.release()), safetyChecker?.release()]);
    throw error;
  }
}

/** For the load log: the WebGPU adapter (vendor, device, backend), when a session runs on WebGPU. */
async function adapterFields(models: readonly OnnxModel[]): Promise<Record<string, unknown>> {
  if (!models.some((model) => model.provider === 'webgpu')) return {};
  const described = await describeWebGpuAdapter();
  return described.adapter ? { adapter: described.adapter } : { adapter: null, adapterUnknown: described.reason };
}

function concat(parts: readonly Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Float32Array(parts.reduce((sum, p) => sum + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The pipeline

interface Plan {
  request: GenerateRequest;
  /** Image i's prompt and seed. */
  prompts: string[];
  seeds: number[];
  schedulerClass: string;
  schedulerConfig: SchedulerConfig;
  latentShape: [number, number, number, number]; // one image: [1, C, h, w]
  /** Classifier-free guidance: an unconditional batch next to the conditional one. */
  guided: boolean;
}

/** CLIP text states: image i's prompt (`cond[i]`) and the negative prompt, each `seqLen × hidden`. */
interface TextStates {
  cond: Float32Array[];
  uncond?: Float32Array;
}

interface DenoiseContext {
  plan: Plan;
  timings: StageTimings;
  options: GenerateOptions;
  progress: { step: number; total: number };
  /** Where the loop's arrays live (sized by `generate`). */
  arena: KernelArena;
}

class OnnxStableDiffusionPipeline implements Pipeline {
  readonly capabilities: ModelCapabilities;
  /** Static batch size of any of the three models: then images are generated one by one. */
  private readonly fixedBatch: number | undefined;
  private released = false;
  /** Decoder output dims by latent shape, as runs returned them. */
  private readonly decodedDims = new Map<string, number[]>();
  private readonly arenas = new ArenaPool();

  constructor(
    private readonly config: ModelConfig,
    private readonly tokenizer: ClipTokenizer,
    private readonly graph: Graph,
    readonly safetyChecker: OnnxSafetyChecker | undefined,
  ) {
    const scale = config.vaeScaleFactor;
    const h = staticDim(graph.sample, 2);
    const w = staticDim(graph.sample, 3);
    const fixedSize = h !== undefined && w !== undefined ? { width: w * scale, height: h * scale } : undefined;
    this.fixedBatch =
      staticDim(graph.sample, 0) ?? staticDim(graph.inputIds, 0) ?? staticDim(graph.latentSample, 0);
    const defaultSize = fixedSize?.width ?? (config.sampleSize !== undefined ? config.sampleSize * scale : 512);
    this.capabilities = {
      name: config.name,
      sizeMultiple: scale,
      minSize: fixedSize ? Math.min(fixedSize.width, fixedSize.height) : Math.max(MIN_SIZE, scale),
      maxSize: fixedSize ? Math.max(fixedSize.width, fixedSize.height) : Math.max(MAX_SIZE, defaultSize),
      defaultSize,
      ...(fixedSize ? { fixedSize } : {}),
      defaultScheduler: config.schedulerClass,
      ...(this.fixedBatch !== undefined ? { fixedBatch: this.fixedBatch } : {}),
      dtype: graph.sample.type === 'float16' ? 'float16' : 'float32',
    };
  }

  async generate(
    request: GenerateRequest,
    options: GenerateOptions = {},
  ): Promise<{ images: RgbImage[]; timings: StageTimings }> {
    if (this.released) throw new Error('Pipeline was released');
    const started = performance.now();
    const timings: StageTimings = { tokenize: 0, textEncoder: 0, unet: 0, scheduler: 0, denoise: 0, vae: 0, total: 0 };
    throwIfAborted(options.signal);

    const plan = this.checkInputs(request);
    const text = await this.encodePrompt(plan, timings);

    // A static batch means one image per denoising loop; otherwise all images share one loop.
    const all = plan.seeds.map((_, i) => i);
    const groups = this.fixedBatch !== undefined ? all.map((i) => [i]) : [all];
    const schedulers = groups.map(() => this.newScheduler(plan));
    const progress = { step: 0, total: schedulers.reduce((sum, s) => sum + s.timesteps.length, 0) };

    const images: RgbImage[] = [];
    for (const [index, group] of groups.entries()) {
      throwIfAborted(options.signal);
      const scheduler = schedulers[index]!;
      const seeds = group.map((i) => plan.seeds[i]!);
      // Each image conditioned on its own prompt's states (the same rows when prompts repeat).
      const groupText = { ...text, cond: group.map((i) => text.cond[i]!) };
      // Image i's numpy stream draws its initial latents, then its step noise (as diffusers'
      // generator does): image i of a batch equals a single-image run with its seed.
      const streams = seeds.map((seed) => new NumpyRandomState(seed));
      const latents = this.prepareLatents(plan, streams, scheduler);
      // The loop's arrays, and room for the scheduler's state beside them, live in WebAssembly
      // memory that the kernels work on in place, reused from one generation to the next.
      const decodedImages = await this.arenas.use(loopArrays(plan, latents.length, group.length), async (arena) => {
        const loopStart = performance.now();
        const ctx = { plan, timings, options, progress, arena };
        const final = await this.denoise(latents, streams, groupText, scheduler, ctx);
        timings.denoise += performance.now() - loopStart;
        return this.decode(final, seeds, plan, timings, options.signal);
      });
      images.push(...decodedImages);
    }
    timings.total = performance.now() - started;
    return { images, timings };
  }

  /** Throws InvalidRequestError (field named) for a request `generate` would refuse; runs nothing. */
  checkRequest(request: GenerateRequest): void {
    this.checkInputs(request);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const results = await Promise.allSettled([
      this.graph.textEncoder.release(),
      this.graph.unet.release(),
      this.graph.vaeDecoder.release(),
      this.safetyChecker?.release(),
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Validates the request against the model; resolves the scheduler. */
  private checkInputs(request: GenerateRequest): Plan {
    const caps = this.capabilities;
    if (typeof request.prompt !== 'string') throw new InvalidRequestError('prompt', 'prompt must be a string');
    if (request.negativePrompt !== undefined && typeof request.negativePrompt !== 'string') {
      throw new InvalidRequestError('negativePrompt', 'negativePrompt must be a string');
    }
    for (const field of ['width', 'height'] as const) {
      const size = request[field];
      if (!Number.isInteger(size) || size % caps.sizeMultiple !== 0) {
        throw new InvalidRequestError(field, `${field} must be a multiple of ${caps.sizeMultiple}, got ${size}`);
      }
      if (caps.fixedSize && size !== caps.fixedSize[field]) {
        throw new InvalidRequestError(
          field,
          `${field} must be ${caps.fixedSize[field]}: model ${caps.name} was exported for ${caps.fixedSize.width}×${caps.fixedSize.height} only`,
        );
      }
      if (size < caps.minSize || size > caps.maxSize) {
        throw new InvalidRequestError(field, `${field} must be between ${caps.minSize} and ${caps.maxSize}, got ${size}`);
      }
    }
    const steps = request.numInferenceSteps;
    if (!Number.isInteger(steps) || steps < 1 || steps > this.config.trainTimesteps) {
      throw new InvalidRequestError(
        'numInferenceSteps',
        `numInferenceSteps must be an integer from 1 to ${this.config.trainTimesteps}, got ${steps}`,
      );
    }
    if (typeof request.guidanceScale !== 'number' || !Number.isFinite(request.guidanceScale) || request.guidanceScale < 0) {
      throw new InvalidRequestError('guidanceScale', `guidanceScale must be a finite number ≥ 0, got ${request.guidanceScale}`);
    }
    if (!Number.isInteger(request.numImages) || request.numImages < 1 || request.numImages > MAX_IMAGES) {
      throw new InvalidRequestError('numImages', `numImages must be an integer from 1 to ${MAX_IMAGES}, got ${request.numImages}`);
    }
    const seeds = request.seeds ?? Array.from({ length: request.numImages }, (_, i) => request.seed + i);
    if (request.seeds === undefined) {
      if (!Number.isInteger(request.seed) || request.seed < 0 || request.seed + request.numImages - 1 > MAX_SEED) {
        throw new InvalidRequestError('seed', `seed must be an integer from 0 to ${MAX_SEED - request.numImages + 1}`);
      }
    } else if (
      !Array.isArray(seeds) ||
      seeds.length !== request.numImages ||
      seeds.some((seed) => !Number.isInteger(seed) || seed < 0 || seed > MAX_SEED)
    ) {
      throw new InvalidRequestError('seeds', `seeds must hold one integer from 0 to ${MAX_SEED} per image (${request.numImages})`);
    }
    const prompts = request.prompts ?? Array.from({ length: request.numImages }, () => request.prompt);
    if (!Array.isArray(prompts) || prompts.length !== request.numImages || prompts.some((p) => typeof p !== 'string')) {
      throw new InvalidRequestError('prompts', `prompts must hold one string per image (${request.numImages})`);
    }
    // Throws UnknownSchedulerError (code 'unknown_scheduler') for a name it does not know.
    const resolved = resolveScheduler(request.scheduler ?? this.config.schedulerClass, this.config.schedulerConfig);
    try {
      // The scheduler's own limits (LCM: at most original_inference_steps) refuse the request here,
      // as bad input, not later as an internal error worth retrying.
      createScheduler(resolved.className, resolved.config).setTimesteps(steps);
    } catch (error) {
      if (!(error instanceof SchedulerConfigError)) throw error;
      const field = error.key === 'num_inference_steps' ? 'numInferenceSteps' : 'scheduler';
      throw new InvalidRequestError(field, error.message);
    }
    const scale = this.config.vaeScaleFactor;
    return {
      request,
      prompts,
      seeds,
      schedulerClass: resolved.className,
      schedulerConfig: resolved.config,
      latentShape: [1, this.config.latentChannels, request.height / scale, request.width / scale],
      // LCM-distilled UNets take the guidance scale as an embedding instead (no second batch).
      guided: request.guidanceScale > 1 && this.graph.timestepCond === undefined,
    };
  }

  private newScheduler(plan: Plan): Scheduler {
    const scheduler = createScheduler(plan.schedulerClass, plan.schedulerConfig);
    scheduler.setTimesteps(plan.request.numInferenceSteps);
    return scheduler;
  }

  /**
   * CLIP text states of the images' prompts and, for classifier-free guidance, of the negative
   * prompt (or ""), in one text-encoder run: each distinct prompt once, then the negative one.
   */
  private async encodePrompt(plan: Plan, timings: StageTimings): Promise<TextStates> {
    const { request } = plan;
    const tokenizeStart = performance.now();
    const distinct = [...new Set(plan.prompts)];
    const prompts = plan.guided ? [...distinct, request.negativePrompt ?? ''] : distinct;
    const ids = prompts.map((prompt) => this.tokenizer.encodePadded(prompt));
    const seqLen = this.tokenizer.maxLength;
    const flat = new Int32Array(prompts.length * seqLen);
    ids.forEach((row, i) => flat.set(row.slice(0, seqLen), i * seqLen));
    timings.tokenize += performance.now() - tokenizeStart;

    const { textEncoder, inputIds, lastHiddenState } = this.graph;
    const batch = batchOf(inputIds, prompts.length);
    const idsInput = new BatchedInput(inputIds, flat, batch, [prompts.length, seqLen]);
    const states = await runRows(textEncoder, [idsInput], batch, lastHiddenState);
    timings.textEncoder += states.ms;
    const rowSize = states.data.length / prompts.length;
    const row = (i: number) => states.data.subarray(i * rowSize, (i + 1) * rowSize);
    const cond = plan.prompts.map((prompt) => row(distinct.indexOf(prompt)));
    return plan.guided ? { cond, uncond: row(distinct.length) } : { cond };
  }

  /** Initial latents: image i draws `randn(seed_i, [1, C, h, w])`, scaled by the scheduler's σ_max. */
  private prepareLatents(plan: Plan, streams: readonly NumpyRandomState[], scheduler: Scheduler): Float32Array {
    const [, channels, height, width] = plan.latentShape;
    const latents = concat(streams.map((stream) => stream.randn(channels * height * width)));
    const sigma = scheduler.initNoiseSigma;
    if (sigma !== 1) for (let i = 0; i < latents.length; i++) latents[i]! *= sigma;
    return latents;
  }

  /**
   * The reverse-diffusion loop. With guidance the UNet sees `[uncond; cond]` in one batch and
   * ε = ε_uncond + g·(ε_cond − ε_uncond) (Ho & Salimans 2022, eq. 6). Returns the latents to
   * decode: the last sample, or for LCM the last denoised estimate (Luo et al. 2023, alg. 3).
   * The latents are copied into the loop's kernel arena and stepped there in place; every buffer
   * the loop feeds is allocated before it.
   */
  private async denoise(
    latents: Float32Array,
    streams: readonly NumpyRandomState[],
    text: TextStates,
    scheduler: Scheduler,
    ctx: DenoiseContext,
  ): Promise<Float32Array> {
    const { plan, timings, options, progress, arena } = ctx;
    const { unet, sample, timestep, outSample } = this.graph;
    const n = streams.length;
    const rows = plan.guided ? 2 * n : n;
    const [, channels, height, width] = plan.latentShape;
    const batch = batchOf(sample, rows);
    const size = latents.length;
    // The UNet's sample rows: the scaled latents, twice with guidance. Where scale_model_input
    // is the identity, the latents are stepped right there (no copy each step).
    const modelInput = arena.allocate(rows * size / n);
    const scaledLatents = modelInput.subarray(0, size);
    const x = scheduler.scalesModelInput ? arena.allocateUnset(size) : scaledLatents;
    x.set(latents);
    const modelDims = [rows, channels, height, width];
    const sampleInput = new BatchedInput(sample, modelInput, batch, modelDims);
    const inputs = [sampleInput, ...this.conditioning(plan, text, n, batch)];
    const timestepInput = new TimestepInput(timestep, batch.size);
    const fixed = { [timestepInput.name]: timestepInput.tensor };
    const prediction = arena.allocateUnset(modelInput.length);
    const guided = plan.guided ? arena.allocateUnset(size) : undefined;
    // seeded noise for the steps that draw it (diffusers' `generator`)
    const noise = scheduler.takesNoise ? arena.allocate(size) : undefined;

    let denoised: Float32Array | undefined;
    for (const t of scheduler.timesteps) {
      throwIfAborted(options.signal);
      let mark = performance.now();
      scheduler.scaleModelInput(x, t, scaledLatents);
      if (plan.guided) modelInput.copyWithin(scaledLatents.length, 0, scaledLatents.length);
      sampleInput.refresh();
      timestepInput.set(t);
      timings.scheduler += performance.now() - mark;

      const out = await runRows(unet, inputs, batch, outSample, fixed, { data: prediction, dims: modelDims });
      timings.unet += out.ms;

      mark = performance.now();
      const noisePred = guided ? applyGuidance(out.data, plan.request.guidanceScale, guided) : out.data;
      if (noise) drawNoise(streams, noise);
      denoised = scheduler.step(noisePred, t, x, noise, x).denoised;
      timings.scheduler += performance.now() - mark;

      progress.step += 1;
      options.onStep?.(progress.step, progress.total);
    }
    return plan.schedulerClass === 'LCMScheduler' && denoised ? denoised : x;
  }

  /**
   * What the UNet is conditioned on besides the sample and timestep, one row per UNet row:
   * text states `[uncond × n, cond₀ … condₙ₋₁]` with guidance (`[cond₀ … condₙ₋₁]` without), image
   * i's row from its own prompt, and, for LCM-distilled UNets, the guidance-scale embedding
   * `timestep_cond`. Converted to the session's dtype once per loop.
   */
  private conditioning(plan: Plan, text: TextStates, n: number, batch: Batch): BatchedInput[] {
    const { encoderHiddenStates, timestepCond } = this.graph;
    const rows = batch.rows;
    const repeat = (row: Float32Array, count: number) => Array.from({ length: count }, () => row);
    const seqLen = this.tokenizer.maxLength;
    const states = concat([...(plan.guided ? repeat(text.uncond!, n) : []), ...text.cond]);
    const inputs = [new BatchedInput(encoderHiddenStates, states, batch, [rows, seqLen, text.cond[0]!.length / seqLen])];
    if (timestepCond) {
      const dim = staticDim(timestepCond, 1) ?? this.config.guidanceEmbeddingDim ?? DEFAULT_GUIDANCE_EMBEDDING_DIM;
      // diffusers' LCM pipeline: w = guidance_scale − 1.
      const embedding = guidanceScaleEmbedding(plan.request.guidanceScale - 1, dim);
      inputs.push(new BatchedInput(timestepCond, concat(repeat(embedding, rows)), batch, [rows, dim]));
    }
    return inputs;
  }

  /** Latents → images through the VAE decoder, one image at a time (as diffusers does). */
  private async decode(
    latents: Float32Array,
    seeds: readonly number[],
    plan: Plan,
    timings: StageTimings,
    signal: AbortSignal | undefined,
  ): Promise<RgbImage[]> {
    const { vaeDecoder, latentSample, decoded } = this.graph;
    const perImage = latents.length / seeds.length;
    const images: RgbImage[] = [];
    for (const [i, seed] of seeds.entries()) {
      throwIfAborted(signal);
      const scaled = new Float32Array(perImage);
      const source = latents.subarray(i * perImage, (i + 1) * perImage);
      const inverse = 1 / this.config.vaeScalingFactor;
      for (let k = 0; k < perImage; k++) scaled[k] = source[k]! * inverse;
      const batch = batchOf(latentSample, 1);
      const input = [new BatchedInput(latentSample, scaled, batch, plan.latentShape)];
      // The decoder's output size for these latents, once a run has shown it: the next image's
      // pixels then go straight into a kernel arena, where the conversion reads them in place.
      const key = plan.latentShape.join('×');
      const dims = this.decodedDims.get(key);
      if (dims) {
        const pixels = dims[2]! * dims[3]!;
        const image = await this.arenas.use([3 * pixels, rgbFloats(pixels)], async (arena) => {
          const out = await runRows(vaeDecoder, input, batch, decoded, {}, { data: arena.allocateUnset(3 * pixels), dims });
          timings.vae += out.ms;
          return toImage(out.data, out.dims, seed, arena);
        });
        images.push(image);
      } else {
        const out = await runRows(vaeDecoder, input, batch, decoded);
        timings.vae += out.ms;
        this.decodedDims.set(key, out.dims);
        images.push(toImage(out.data, out.dims, seed));
      }
    }
    return images;
  }
}

/**
 * Float32 lengths of the arrays `denoise` allocates for `images` images of `size` latent values
 * in all: the latents (when the scheduler scales its input), guided ε, step noise and the
 * scheduler's state, each `size`; the UNet's input and output, a latent image per row.
 */
function loopArrays(plan: Plan, size: number, images: number): number[] {
  const rows = plan.guided ? 2 * images : images;
  return [...Array<number>(3 + SCHEDULER_STATE_ARRAYS).fill(size), ...Array<number>(2 * rows).fill(size / images)];
}

/** Standard normals for a stochastic step: image i's share continues image i's stream. */
function drawNoise(streams: readonly NumpyRandomState[], noise: Float32Array): void {
  const perImage = noise.length / streams.length;
  streams.forEach((stream, i) => stream.randnInto(noise.subarray(i * perImage, (i + 1) * perImage)));
}

/**
 * diffusers' `get_guidance_scale_embedding(w, embedding_dim)` for one w: sinusoidal features of
 * 1000·w (LCM, Luo et al. 2023; the "w-conditioned" UNet of Meng et al. 2023).
 */
export function guidanceScaleEmbedding(w: number, dim: number): Float32Array {
  const half = Math.floor(dim / 2);
  const scaled = Math.fround(w * 1000);
  const base = Math.fround(Math.log(10000) / (half - 1));
  const out = new Float32Array(dim); // odd dims keep a zero pad at the end
  for (let k = 0; k < half; k++) {
    const arg = Math.fround(scaled * Math.fround(Math.exp(-k * base)));
    out[k] = Math.sin(arg);
    out[half + k] = Math.cos(arg);
  }
  return out;
}

/**
 * Decoder output [1, 3, H, W] in [−1, 1] → 8-bit RGB, HWC; the size comes from the tensor.
 * diffusers: `((x / 2 + 0.5).clip(0, 1) * 255).round()` in float32 (see `toRgb8`).
 */
function toImage(data: Float32Array, dims: readonly number[], seed: number, arena?: KernelArena): RgbImage {
  const height = dims[2]!;
  const width = dims[3]!;
  return { width, height, data: toRgb8(data.subarray(0, 3 * width * height), width * height, arena), seed };
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new JobCanceledError();
}
