import ort from 'onnxruntime-node';
import { expect } from 'vitest';
import type { GenerateRequest, PipelineLogger } from '../../worker/pipeline/index.js';
import { describeWebGpuFailure, FLOAT16_PROBE_MODEL } from '../../worker/pipeline/webgpu-device.js';

/**
 * Why this machine cannot run the WebGPU tests, or undefined when it can: a WebGPU session must
 * start (Dawn found a Vulkan device it accepts). `.ci/run` installs one (Mesa's lavapipe).
 */
export async function webgpuSkipReason(): Promise<string | undefined> {
  if (!ort.listSupportedBackends().some((backend) => backend.name === 'webgpu')) {
    return `onnxruntime-node has no WebGPU provider on ${process.platform}-${process.arch}`;
  }
  try {
    const session = await ort.InferenceSession.create(FLOAT16_PROBE_MODEL, { executionProviders: [{ name: 'webgpu' }], logSeverityLevel: 3 });
    await session.release();
    return undefined;
  } catch (err) {
    const cause = describeWebGpuFailure((err as Error).message).split('. ')[0];
    return `${cause}; .ci/run installs mesa-vulkan-drivers from bookworm-backports`;
  }
}

/**
 * WebGPU's first runs compile the shaders: about a minute on lavapipe with a cold cache (a fresh
 * CI machine), several on a loaded one, and ONNX Runtime's Node binding runs sessions on the main
 * thread, so no timer fires meanwhile. Mesa caches the shaders on disk for the next run.
 */
export const GPU_TIMEOUT_MS = 600_000;

export const REQUEST: GenerateRequest = {
  prompt: 'a photograph of an astronaut riding a horse',
  width: 64,
  height: 64,
  numInferenceSteps: 3,
  guidanceScale: 7.5,
  seed: 42,
  numImages: 1,
};

/** Variations of REQUEST that the CPU and WebGPU must agree on. */
export const REQUESTS: Array<[string, Partial<GenerateRequest>]> = [
  ['guided, 64 px', {}],
  ['two images in one batch', { seed: 7, numImages: 2 }],
  ['unguided 96×64 with a scheduler that draws noise', { width: 96, height: 64, guidanceScale: 1, seed: 3, scheduler: 'euler_a' }],
];

/** Largest and mean absolute difference of two 8-bit images. */
export function difference(a: Uint8Array, b: Uint8Array): { max: number; mean: number } {
  expect(a.length).toBe(b.length);
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / a.length };
}

export function capturingLogger(): PipelineLogger & { lines: Array<{ level: string; fields: Record<string, unknown>; message: string }> } {
  const lines: Array<{ level: string; fields: Record<string, unknown>; message: string }> = [];
  return {
    lines,
    info: (fields, message) => lines.push({ level: 'info', fields, message }),
    warn: (fields, message) => lines.push({ level: 'warn', fields, message }),
  };
}
