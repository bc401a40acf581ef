/** The pipeline's public surface (DESIGN.md, "Pipeline contract"). */
export { ClipTokenizer } from './tokenizer.js';
export { createScheduler, resolveScheduler, SCHEDULER_ALIASES } from './schedulers/index.js';
export { randn, NumpyRandomState } from './randn.js';
export {
  loadPipeline,
  ModelLoadError,
  InvalidRequestError,
  JobCanceledError,
  guidanceScaleEmbedding,
  type LoadPipelineOptions,
  type ExecutionProvider,
  type PipelineLogger,
} from './pipeline.js';
export { cudaProviderInstalled } from './onnx-session.js';
export { OnnxSafetyChecker, SAFETY_CHECKER_FILES } from './safety-checker.js';
export { ClipImageProcessor, parsePreprocessorConfig, resizeLikePillow, type Rgb8 } from './clip-image-processor.js';
export {
  float32ToFloat16,
  float16ToFloat32,
  toFloat16Bits,
  fromFloat16Bits,
  halfBitsFromFloatBits,
} from './float16.js';
export type * from './types.js';
