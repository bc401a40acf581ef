/**
 * float16 exports on ONNX Runtime's WebGPU provider: the same requests as on the CPU within fp16
 * precision, and a clear refusal on an adapter without f16 shaders. A file of its own so that
 * its shaders (the f16 variants) compile beside test/webgpu.test.ts's, not after them.
 */
import ort from 'onnxruntime-node';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import { loadPipeline } from '../worker/pipeline/index.js';
import { resetWebGpuFloat16Probe } from '../worker/pipeline/webgpu-device.js';
import { tinyPipelines } from './helpers/tiny-pipelines.js';
import { capturingLogger, difference, GPU_TIMEOUT_MS, REQUEST as request, REQUESTS, webgpuSkipReason } from './helpers/webgpu.js';

const skip = await webgpuSkipReason();
const gpuTitle = (title: string) => `${title}${skip ? ` (skipped: ${skip})` : ''}`;
const { tinyModel, load } = tinyPipelines('sd-webgpu-f16-test-');

describe.skipIf(skip)(gpuTitle('float16 on WebGPU against the CPU'), { timeout: GPU_TIMEOUT_MS }, () => {
  it('float16: the same requests agree within fp16 precision (measured: ≤ 9 levels, mean ≤ 1.1)', async () => {
    const dir16 = await tinyModel({ dtype: 'float16' });
    const cpu16 = await load(dir16);
    const gpu16 = await load(dir16, { provider: 'webgpu' });
    expect(gpu16.capabilities.dtype).toBe('float16');
    for (const [, overrides] of REQUESTS.slice(0, 2)) {
      const r = { ...request, ...overrides };
      const [onCpu, onGpu] = [await cpu16.generate(r), await gpu16.generate(r)];
      for (const [i, image] of onGpu.images.entries()) {
        const { max, mean } = difference(onCpu.images[i]!.data, image.data);
        expect(max).toBeLessThanOrEqual(12);
        expect(mean).toBeLessThan(1.5);
      }
    }
  });
});

describe.skipIf(skip)(gpuTitle('float16 on an adapter without f16 shaders'), { timeout: GPU_TIMEOUT_MS }, () => {
  afterEach(() => {
    vi.restoreAllMocks();
    resetWebGpuFloat16Probe();
  });

  const sessionClass = ort.InferenceSession as unknown as { prototype: ort.InferenceSession };
  // Taken before any spy: a spy must call the real method, never another spy.
  const run = sessionClass.prototype.run;

  /** ONNX Runtime's answer when a float16 program meets a device without shader-f16. */
  function withoutShaderF16(): void {
    resetWebGpuFloat16Probe();
    vi.spyOn(sessionClass.prototype, 'run').mockImplementation(function (this: ort.InferenceSession, feeds: any, ...rest: any[]) {
      if (this.inputNames.length === 1 && this.inputNames[0] === 'x') {
        return Promise.reject(new Error('shader_helper.cc:421 Program Mul requires f16 but the device does not support it.'));
      }
      return (run as (...args: unknown[]) => Promise<ort.InferenceSession.ReturnType>).call(this, feeds, ...rest);
    } as typeof run);
  }

  it('refuses a float16 export with a clear provider_unavailable error', async () => {
    const dir16 = await tinyModel({ dtype: 'float16' });
    withoutShaderF16();
    const error = await loadPipeline(dir16, { provider: 'webgpu' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'ModelLoadError', code: 'provider_unavailable', file: 'text_encoder/model.onnx' });
    expect((error as Error).message).toBe(
      'text_encoder/model.onnx is a float16 export, and the WebGPU adapter runs no float16 shaders (it lacks the shader-f16 feature: ' +
        'Program Mul requires f16 but the device does not support it.); use a float32 export of the model, or another provider',
    );
  });

  it('runs a float16 export on the CPU when the fallback is allowed, with a warning', async () => {
    const dir16 = await tinyModel({ dtype: 'float16' });
    withoutShaderF16();
    const log = capturingLogger();
    const pipeline = await load(dir16, { provider: 'webgpu', allowCpuFallback: true, logger: log });
    expect(log.lines.filter((l) => l.level === 'warn').map((l) => l.fields['file'])).toEqual([
      'text_encoder/model.onnx',
      'unet/model.onnx',
      'vae_decoder/model.onnx',
      'safety_checker/model.onnx',
    ]);
    expect(log.lines.find((l) => l.message === 'Stable Diffusion pipeline loaded')?.fields).toMatchObject({ provider: 'cpu' });
    const { images } = await pipeline.generate(request);
    expect(images[0]!.data.length).toBe(64 * 64 * 3);
  });

  it('a float32 export needs no f16 shaders', async () => {
    withoutShaderF16();
    const pipeline = await load(inject('tinyModelDir'), { provider: 'webgpu' });
    expect(pipeline.capabilities.dtype).toBe('float32');
  });
});
