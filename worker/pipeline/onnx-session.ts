/**
 * ONNX Runtime sessions for the pipeline's models: the execution provider and its session
 * options, tensor metadata read from the session (names, dtypes, shapes — never assumed), and
 * timed runs so the pipeline can report where the time goes.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { describeWebGpuFailure, webgpuFloat16Unsupported } from './webgpu-device.js';

export type ExecutionProvider = 'cpu' | 'cuda' | 'webgpu';

/** How the WebGPU provider lays out the tensors of layout-sensitive operators (convolutions). */
export type WebGpuLayout = 'NCHW' | 'NHWC';

/** pino-compatible: `logger.warn({ …fields }, 'message')`. */
export interface PipelineLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

export interface ProviderOptions {
  /** Default `cpu`. */
  provider?: ExecutionProvider;
  /**
   * CUDA device (the worker's GPU slot). Default 0. WebGPU takes no device index from ONNX
   * Runtime's Node binding: its device is the adapter Dawn picks from what Vulkan shows the
   * process (the autoscaler's GPU slots narrow that to one GPU; see `webgpu-device.ts`).
   */
  deviceId?: number;
  /** WebGPU: the layout of convolution-like operators (ONNX Runtime's default: NHWC). */
  webgpuLayout?: WebGpuLayout;
  /** CPU intra-op threads; default: ONNX Runtime's choice (one per physical core). */
  cpuThreads?: number;
  /**
   * Whether ONNX Runtime's CPU threads spin while waiting for work (its default). Spinning
   * lowers latency on a machine with cores to spare; where the worker's own JS shares few
   * cores with them, turning it off can be much faster (measure with `npm run bench:pipeline`).
   */
  cpuSpinning?: boolean;
  /** When CUDA is requested but unusable, run on CPU (with a warning) instead of failing. */
  allowCpuFallback?: boolean;
  logger?: PipelineLogger;
}

/**
 * A model that cannot be loaded or does not have the shape the pipeline needs. Unrecoverable:
 * retrying the job will not help. `code` is `model_invalid` for a broken/mismatched model,
 * `provider_unavailable` when the requested execution provider cannot run on this machine.
 */
export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
  readonly code: 'model_invalid' | 'provider_unavailable';
  /** The model file at fault, relative to the model directory when known. */
  readonly file: string | undefined;
  /** The tensor at fault, when the problem is one tensor. */
  readonly tensor: string | undefined;

  constructor(
    message: string,
    details: { file?: string; tensor?: string; code?: ModelLoadError['code']; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = details.code ?? 'model_invalid';
    this.file = details.file;
    this.tensor = details.tensor;
  }
}

/** An input or output of a session. `shape` entries are sizes, or names of dynamic axes. */
export interface TensorSpec {
  name: string;
  type: Tensor.Type;
  shape: readonly (number | string)[];
  /** False when this ONNX Runtime gave no metadata (type and shape are then placeholders). */
  declared: boolean;
}

/** The size of `spec`'s `axis` when the export fixes it. */
export function staticDim(spec: TensorSpec, axis: number): number | undefined {
  const dim = spec.shape[axis];
  return typeof dim === 'number' && dim > 0 ? dim : undefined;
}

const CUDA_PROVIDER_LIBRARY: Partial<Record<NodeJS.Platform, string>> = {
  linux: 'libonnxruntime_providers_cuda.so',
  win32: 'onnxruntime_providers_cuda.dll',
};

/**
 * Whether the CUDA execution provider can be loaded: onnxruntime-node lists it with
 * `bundled: false` because its libraries are downloaded at install time
 * (`--onnxruntime-node-install=cuda12`); they then sit next to the native binding.
 */
export function cudaProviderInstalled(): boolean {
  const cuda = ort.listSupportedBackends().find((backend) => backend.name === 'cuda');
  if (!cuda) return false;
  if (cuda.bundled) return true;
  const library = CUDA_PROVIDER_LIBRARY[process.platform];
  if (!library) return false;
  const require = createRequire(import.meta.url);
  const packageDir = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const bindingDir = path.join(packageDir, 'bin', 'napi-v6', process.platform, process.arch);
  return existsSync(path.join(bindingDir, library));
}

const CUDA_INSTALL_HINT =
  'install its libraries with `npm install --onnxruntime-node-install=cuda12` (CUDA 12 and cuDNN 9 ' +
  'must be present), or set allowCpuFallback to run on CPU';

/** Whether this onnxruntime-node build carries the WebGPU provider (its Linux x64 and Windows builds do). */
export function webgpuProviderBundled(): boolean {
  return ort.listSupportedBackends().some((backend) => backend.name === 'webgpu');
}

/**
 * The provider the sessions will use: the one provider selection every session loader of the
 * pipeline goes through (with `openOnnxModel`). Requesting a GPU provider this installation
 * lacks is an error unless the caller opted into the CPU fallback. A WebGPU adapter is only
 * known to exist once a session starts: `openOnnxModel` reports its absence.
 */
export function resolveExecutionProvider(options: ProviderOptions): ExecutionProvider {
  const requested = options.provider ?? 'cpu';
  if (requested === 'cpu') return requested;
  let missing: string | undefined;
  if (requested === 'cuda' && !cudaProviderInstalled()) {
    missing = `CUDA execution provider requested but onnxruntime-node's CUDA provider is not installed: ${CUDA_INSTALL_HINT}`;
  } else if (requested === 'webgpu' && !webgpuProviderBundled()) {
    missing = `WebGPU execution provider requested but this onnxruntime-node build (${process.platform}-${process.arch}) has none`;
  }
  if (missing === undefined) {
    if (requested === 'webgpu' && (options.deviceId ?? 0) !== 0) {
      options.logger?.warn(
        { provider: 'webgpu', deviceId: options.deviceId },
        'WebGPU takes no device index (WORKER_DEVICE_ID is CUDA\'s): Dawn uses the GPU Vulkan shows this process; ' +
          'to choose one, set DRI_PRIME=pci-<domain>_<bus>_<device>_<function> and MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1 ' +
          '(the autoscaler\'s GPU slots do)',
      );
    }
    return requested;
  }
  if (!options.allowCpuFallback) throw new ModelLoadError(missing, { code: 'provider_unavailable' });
  options.logger?.warn({ provider: requested, fallback: 'cpu' }, `${missing}; falling back to CPU`);
  return 'cpu';
}

/** Session options per provider. */
export function sessionOptionsFor(provider: ExecutionProvider, options: ProviderOptions): InferenceSession.SessionOptions {
  if (provider === 'cuda') {
    return {
      executionProviders: [{ name: 'cuda', deviceId: options.deviceId ?? 0 }, 'cpu'],
      graphOptimizationLevel: 'all',
      // Tensors live on the GPU; a CPU arena would only grow to the largest host copy and stay there.
      enableCpuMemArena: false,
      logSeverityLevel: 3,
    };
  }
  if (provider === 'webgpu') {
    return {
      // Nodes the provider has no kernel for (shape arithmetic, int64 casts) run on ONNX
      // Runtime's CPU provider, as with CUDA; the session itself never silently moves to CPU.
      executionProviders: [{ name: 'webgpu', ...(options.webgpuLayout ? { preferredLayout: options.webgpuLayout } : {}) }],
      graphOptimizationLevel: 'all',
      enableCpuMemArena: false,
      logSeverityLevel: 3,
    };
  }
  return {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    ...(options.cpuThreads ? { intraOpNumThreads: options.cpuThreads } : {}),
    ...(options.cpuSpinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
    logSeverityLevel: 3,
  };
}

/** A loaded model: its session, its tensor specs, timed runs. */
export class OnnxModel {
  readonly inputs: ReadonlyMap<string, TensorSpec>;
  readonly outputs: ReadonlyMap<string, TensorSpec>;
  private released = false;

  constructor(
    /** Path relative to the model directory, for messages. */
    readonly file: string,
    readonly provider: ExecutionProvider,
    private readonly session: InferenceSession,
  ) {
    this.inputs = specsOf(session.inputNames, session.inputMetadata);
    this.outputs = specsOf(session.outputNames, session.outputMetadata);
  }

  /**
   * Runs the session (only `fetches` when given: names, or names → tensors ONNX Runtime writes
   * into); `ms` is the time spent inside ONNX Runtime.
   */
  async run(
    feeds: Record<string, Tensor>,
    fetches?: InferenceSession.FetchesType,
  ): Promise<{ outputs: InferenceSession.ReturnType; ms: number }> {
    const start = performance.now();
    const outputs = await (fetches ? this.session.run(feeds, fetches) : this.session.run(feeds));
    return { outputs, ms: performance.now() - start };
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

function specsOf(
  names: readonly string[],
  metadata: readonly InferenceSession.ValueMetadata[] | undefined,
): Map<string, TensorSpec> {
  const specs = new Map<string, TensorSpec>();
  for (const [index, name] of names.entries()) {
    // onnxruntime-node ≥ 1.22 exposes metadata; without it only names are known.
    const meta = metadata?.find((m) => m.name === name) ?? metadata?.[index];
    if (meta?.isTensor) {
      specs.set(name, { name, type: meta.type, shape: [...meta.shape], declared: true });
    } else {
      specs.set(name, { name, type: 'float32', shape: [], declared: false });
    }
  }
  return specs;
}

/**
 * Opens `modelDir/file` on `provider`. A GPU session that fails to start (no GPU, missing
 * CUDA/cuDNN libraries, no WebGPU adapter, a float16 export on an adapter without f16 shaders)
 * falls back to CPU only when the caller allowed it.
 */
export async function openOnnxModel(
  modelDir: string,
  file: string,
  provider: ExecutionProvider,
  options: ProviderOptions,
): Promise<OnnxModel> {
  const fullPath = path.join(modelDir, file);
  if (!existsSync(fullPath)) throw new ModelLoadError(`Model file ${file} is missing in ${modelDir}`, { file });
  let model: OnnxModel;
  try {
    model = new OnnxModel(file, provider, await ort.InferenceSession.create(fullPath, sessionOptionsFor(provider, options)));
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    if (provider === 'cpu') throw new ModelLoadError(`ONNX Runtime could not load ${file}: ${reason}`, { file, cause: error });
    const message =
      provider === 'cuda'
        ? `Could not start a CUDA session for ${file} (device ${options.deviceId ?? 0}): ${reason}; ${CUDA_INSTALL_HINT}`
        : `Could not start a WebGPU session for ${file}: ${describeWebGpuFailure(reason)}`;
    return fallBackToCpu(message, error, modelDir, file, provider, options);
  }
  if (provider === 'webgpu' && [...model.inputs.values(), ...model.outputs.values()].some((spec) => spec.type === 'float16')) {
    const unsupported = await webgpuFloat16Unsupported(sessionOptionsFor('webgpu', options));
    if (unsupported !== undefined) {
      await model.release();
      const message =
        `${file} is a float16 export, and the WebGPU adapter runs no float16 shaders (it lacks the shader-f16 feature: ${unsupported}); ` +
        'use a float32 export of the model, or another provider';
      return fallBackToCpu(message, undefined, modelDir, file, provider, options);
    }
  }
  return model;
}

function fallBackToCpu(
  message: string,
  cause: unknown,
  modelDir: string,
  file: string,
  provider: ExecutionProvider,
  options: ProviderOptions,
): Promise<OnnxModel> {
  if (!options.allowCpuFallback) throw new ModelLoadError(message, { file, code: 'provider_unavailable', cause });
  options.logger?.warn({ file, provider, fallback: 'cpu' }, `${message}; falling back to CPU`);
  return openOnnxModel(modelDir, file, 'cpu', options);
}
