/**
 * The export's NSFW safety checker (`safety_checker/model.onnx` + `feature_extractor/`), run as
 * diffusers' `OnnxStableDiffusionPipeline` runs it: the feature extractor's `pixel_values` as
 * `clip_input`, the decoded image (N×H×W×3, values 0…1) as `images`, one image per run (diffusers
 * notes the exported checker fails on batches), `has_nsfw_concepts` read back. Tensor names and
 * dtypes come from the session; float16 exports get float16 feeds.
 *
 * `images` here is the 8-bit image / 255, where diffusers passes the decoder's float image before
 * its rounding to 8 bits: only the checker's `out_images` (the image blacked out when flagged)
 * depends on it, and the service blanks flagged images itself; `clip_input` is computed from the
 * same 8-bit image diffusers' `numpy_to_pil` makes, so the verdict's input is the same.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Tensor } from 'onnxruntime-node';
import { ClipImageProcessor, parsePreprocessorConfig } from './clip-image-processor.js';
import {
  ModelLoadError,
  openOnnxModel,
  staticDim,
  type ExecutionProvider,
  type OnnxModel,
  type ProviderOptions,
  type TensorSpec,
} from './onnx-session.js';
import { BatchedInput, batchOf } from './session-feeds.js';
import type { RgbImage, SafetyChecker } from './types.js';

export const SAFETY_CHECKER_FILES = {
  model: 'safety_checker/model.onnx',
  preprocessor: 'feature_extractor/preprocessor_config.json',
} as const;

const FLOAT_TYPES: readonly Tensor.Type[] = ['float32', 'float16'];
const VERDICT_TYPES: readonly Tensor.Type[] = ['bool', 'uint8', 'int32', 'int64', 'float32', 'float16'];

function spec(model: OnnxModel, kind: 'input' | 'output', name: string, rank: number, types: readonly Tensor.Type[]): TensorSpec {
  const specs = kind === 'input' ? model.inputs : model.outputs;
  const found = specs.get(name);
  if (!found) {
    throw new ModelLoadError(`${model.file} has no ${kind} tensor "${name}" (its ${kind}s: ${[...specs.keys()].join(', ') || 'none'})`, {
      file: model.file,
      tensor: name,
    });
  }
  if (!found.declared) return { ...found, type: types[0]!, shape: Array.from({ length: rank }, (_, i) => `${name}_${i}`) };
  if (found.shape.length !== rank) {
    throw new ModelLoadError(`${model.file}: ${kind} "${name}" has rank ${found.shape.length}, expected ${rank}`, { file: model.file, tensor: name });
  }
  if (!types.includes(found.type)) {
    throw new ModelLoadError(`${model.file}: ${kind} "${name}" has type ${found.type}, expected ${types.join(' or ')}`, {
      file: model.file,
      tensor: name,
    });
  }
  return found;
}

export class OnnxSafetyChecker implements SafetyChecker {
  private constructor(
    private readonly model: OnnxModel,
    readonly processor: ClipImageProcessor,
    private readonly clipInput: TensorSpec,
    private readonly images: TensorSpec,
    private readonly verdict: TensorSpec,
  ) {}

  /**
   * The checker of the export in `modelDir`, or undefined when it has none. The session is made
   * by the same function (and so on the same execution provider) as the pipeline's others.
   */
  static async load(
    modelDir: string,
    provider: ExecutionProvider,
    options: ProviderOptions,
    listed: boolean,
  ): Promise<OnnxSafetyChecker | undefined> {
    if (!existsSync(path.join(modelDir, SAFETY_CHECKER_FILES.model))) {
      if (listed) {
        options.logger?.warn(
          { file: SAFETY_CHECKER_FILES.model },
          'model_index.json lists a safety_checker but its model.onnx is missing: images cannot be screened for NSFW content',
        );
      }
      return undefined;
    }
    const processor = await readProcessor(modelDir);
    const model = await openOnnxModel(modelDir, SAFETY_CHECKER_FILES.model, provider, options);
    try {
      const clipInput = spec(model, 'input', 'clip_input', 4, FLOAT_TYPES);
      const images = spec(model, 'input', 'images', 4, FLOAT_TYPES);
      const verdict = spec(model, 'output', 'has_nsfw_concepts', 1, VERDICT_TYPES);
      for (const name of model.inputs.keys()) {
        if (name !== 'clip_input' && name !== 'images') {
          throw new ModelLoadError(`${model.file} has an input "${name}" this pipeline cannot feed`, { file: model.file, tensor: name });
        }
      }
      const crop = processor.outputSize(1, 1);
      const expect = (axis: number, value: number, what: string) => {
        const dim = staticDim(clipInput, axis);
        if (dim !== undefined && dim !== value) {
          throw new ModelLoadError(
            `${model.file}: "clip_input" dimension ${axis} is ${dim} but ${what} is ${value} (${SAFETY_CHECKER_FILES.preprocessor})`,
            { file: model.file, tensor: 'clip_input' },
          );
        }
      };
      expect(1, 3, 'the RGB channels');
      if (processor.config.crop) {
        expect(2, crop.height, 'the crop height');
        expect(3, crop.width, 'the crop width');
      }
      return new OnnxSafetyChecker(model, processor, clipInput, images, verdict);
    } catch (error) {
      await model.release().catch(() => undefined);
      throw error;
    }
  }

  get dtype(): Tensor.Type {
    return this.clipInput.type;
  }

  async check(image: RgbImage): Promise<{ nsfw: boolean; ms: number }> {
    const pixelValues = this.processor.pixelValues(image);
    const crop = this.processor.outputSize(image.width, image.height);
    const staticSide = [staticDim(this.images, 1), staticDim(this.images, 2)];
    if ((staticSide[0] !== undefined && staticSide[0] !== image.height) || (staticSide[1] !== undefined && staticSide[1] !== image.width)) {
      throw new Error(`${this.model.file} takes ${staticSide[1]}×${staticSide[0]} images only, not ${image.width}×${image.height}`);
    }
    const unit = new Float32Array(image.data.length);
    for (let i = 0; i < unit.length; i++) unit[i] = image.data[i]! / 255;
    // One image per run; a static batch is filled by repeating it.
    const batch = batchOf(this.clipInput, 1);
    const feeds: Record<string, Tensor> = {
      [this.clipInput.name]: new BatchedInput(this.clipInput, pixelValues, batch, [1, 3, crop.height, crop.width]).tensors[0]!,
      [this.images.name]: new BatchedInput(this.images, unit, batchOf(this.images, 1), [1, image.height, image.width, 3]).tensors[0]!,
    };
    const { outputs, ms } = await this.model.run(feeds, [this.verdict.name]);
    const flags = outputs[this.verdict.name]?.data;
    if (!flags || !ArrayBuffer.isView(flags) || (flags as ArrayLike<unknown>).length < 1) {
      throw new Error(`${this.model.file} returned no "${this.verdict.name}"`);
    }
    const first = (flags as unknown as ArrayLike<number | bigint | boolean>)[0];
    return { nsfw: Boolean(first), ms };
  }

  async release(): Promise<void> {
    await this.model.release();
  }
}

async function readProcessor(modelDir: string): Promise<ClipImageProcessor> {
  const file = SAFETY_CHECKER_FILES.preprocessor;
  const full = path.join(modelDir, file);
  if (!existsSync(full)) throw new ModelLoadError(`Model file ${file} is missing in ${modelDir} (the safety checker needs it)`, { file });
  try {
    const config: unknown = JSON.parse(await readFile(full, 'utf8'));
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new Error('not a JSON object');
    return new ClipImageProcessor(parsePreprocessorConfig(config as Record<string, unknown>));
  } catch (error) {
    throw new ModelLoadError(`Model file ${file} is not usable: ${(error as Error).message}`, { file, cause: error });
  }
}
