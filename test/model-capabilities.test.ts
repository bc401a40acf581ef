import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SCHEDULER_CLASS, SCHEDULER_NAMES } from '../shared/job-schema.js';
import { ModelCapabilitiesError, readModelCapabilities } from '../shared/model-capabilities.js';
import { readOnnxInputs } from '../shared/onnx-graph-inputs.js';
import { writeTinyModel, type TinyModelOptions } from '../scripts/tiny-model/index.js';
import { DataType, encodeModel } from '../scripts/tiny-model/onnx-proto.js';
import { loadPipeline, resolveScheduler } from '../worker/pipeline/index.js';

/**
 * The API reads what a model can do from its export (config files, ONNX graph inputs) without
 * ONNX Runtime; the worker reads it from its sessions. The two readings must agree on every
 * export the pipeline supports, and the API's reading must not read the weights.
 */
let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-caps-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const VARIANTS: [string, TinyModelOptions][] = [
  ['fixed-64', { fixedSize: 64, fixedBatch: 1 }],
  ['float16', { dtype: 'float16', inputIds: 'int64', timestep: 'float' }],
  ['lcm', { lcm: true }],
  ['batch-2', { fixedBatch: 2 }],
  ['inline-weights', { externalData: 'none' }],
  ['no-safety-checker', { safetyChecker: 'none' }],
];

describe('readModelCapabilities', () => {
  it('agrees with what the loaded pipeline reports, on every tiny export variant', async () => {
    const dirs: [string, string][] = [['default', inject('tinyModelDir')]];
    for (const [name, options] of VARIANTS) {
      await writeTinyModel(path.join(dir, name), options);
      dirs.push([name, path.join(dir, name)]);
    }
    for (const [name, modelDir] of dirs) {
      const fromExport = await readModelCapabilities(modelDir);
      const pipeline = await loadPipeline(modelDir, { cpuThreads: 1 });
      try {
        const { maxStepsByScheduler, filters, ...rest } = fromExport;
        expect(rest, name).toEqual({ ...pipeline.capabilities });
        expect(Object.keys(maxStepsByScheduler).length, name).toBeGreaterThan(0);
        // nsfw exactly when the loaded pipeline has a safety checker.
        expect(filters.available.includes('nsfw'), name).toBe(pipeline.safetyChecker !== undefined);
      } finally {
        await pipeline.release();
      }
    }
    expect((await readModelCapabilities(path.join(dir, 'fixed-64'))).fixedSize).toEqual({ width: 64, height: 64 });
    expect((await readModelCapabilities(inject('tinyModelDir'))).defaultSize).toBe(64);
    expect((await readModelCapabilities(path.join(dir, 'lcm'))).maxStepsByScheduler.LCMScheduler).toBe(50);
  });

  it('maps every request scheduler name to the class the worker resolves it to', () => {
    for (const name of SCHEDULER_NAMES) expect(SCHEDULER_CLASS[name], name).toBe(resolveScheduler(name, { _class_name: 'PNDMScheduler' }).className);
  });

  it('names the file at fault when the export is incomplete or broken', async () => {
    const broken = path.join(dir, 'broken');
    await writeTinyModel(broken);
    await fs.rm(path.join(broken, 'vae_decoder', 'model.onnx'));
    await expect(readModelCapabilities(broken)).rejects.toMatchObject({ name: 'ModelCapabilitiesError', file: 'vae_decoder/model.onnx' });
    const unet = path.join(broken, 'unet', 'model.onnx');
    const bytes = await fs.readFile(unet);
    await fs.writeFile(unet, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await fs.copyFile(path.join(inject('tinyModelDir'), 'vae_decoder', 'model.onnx'), path.join(broken, 'vae_decoder', 'model.onnx'));
    const error = await readModelCapabilities(broken).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelCapabilitiesError);
    expect((error as ModelCapabilitiesError).file).toBe('unet/model.onnx');
    await expect(readModelCapabilities(path.join(dir, 'nothing-here'))).rejects.toMatchObject({ file: 'model_index.json' });
  });
});

describe('readOnnxInputs', () => {
  it('reads the graph inputs and skips the weights without reading them', async () => {
    const weights = new Uint8Array(48 * 1024 * 1024); // 48 MiB of float32 "weights" inline, before the inputs
    const file = path.join(dir, 'big.onnx');
    await fs.writeFile(
      file,
      encodeModel({
        ir_version: 8,
        opset_import: [{ domain: '', version: 17 }],
        producer_name: 'test',
        producer_version: '0',
        doc_string: '',
        graph: {
          name: 'g',
          node: [{ name: 'n', op_type: 'Identity', input: ['sample'], output: ['out_sample'], attribute: [] }],
          initializer: [{ name: 'w', dims: [weights.length / 4], data_type: DataType.FLOAT, raw_data: weights }],
          input: [
            {
              name: 'sample',
              type: { tensor_type: { elem_type: DataType.FLOAT16, shape: { dim: [{ dim_param: 'batch' }, { dim_value: 4 }, { dim_value: 96 }, { dim_value: 64 }] } } },
            },
          ],
          output: [{ name: 'out_sample', type: { tensor_type: { elem_type: DataType.FLOAT16, shape: { dim: [{ dim_param: 'batch' }] } } } }],
        },
      }),
    );
    const { inputs, bytesRead } = await readOnnxInputs(file);
    expect(inputs.get('sample')).toEqual({ name: 'sample', elemType: DataType.FLOAT16, shape: ['batch', 4, 96, 64] });
    expect([...inputs.keys()]).toEqual(['sample']);
    expect(bytesRead).toBeLessThan(512 * 1024);
  });
});
