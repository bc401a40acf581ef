/**
 * The tiny random-weight Stable Diffusion generator: the export layout and tensor contract
 * as ONNX Runtime sees them, outputs that depend on their inputs, byte-identical regeneration,
 * and every export variant loading and running on CPU.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY_MODEL_NOTE, writeTinyModel, type TinyModelOptions } from '../scripts/tiny-model/index.js';
import { decodeModel } from '../scripts/tiny-model/onnx-proto.js';
import { float16ToFloat32, float32ToFloat16 } from '../worker/pipeline/float16.js';

const BOS = 49406;
const EOS = 49407;
const SEQ = 77;
const HIDDEN = 32;

const tempDirs: string[] = [];
const sessions: InferenceSession[] = [];

afterAll(async () => {
  await Promise.allSettled(sessions.map((s) => s.release()));
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function tinyModel(options: TinyModelOptions = {}): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tiny-model-test-'));
  tempDirs.push(dir);
  await writeTinyModel(dir, options);
  return dir;
}

async function open(dir: string, component: string): Promise<InferenceSession> {
  const session = await InferenceSession.create(path.join(dir, component, 'model.onnx'), {
    logSeverityLevel: 3,
    intraOpNumThreads: 1,
  });
  sessions.push(session);
  return session;
}

interface Model {
  dir: string;
  textEncoder: InferenceSession;
  unet: InferenceSession;
  vae: InferenceSession;
}

async function openModel(dir: string): Promise<Model> {
  const [textEncoder, unet, vae] = await Promise.all([open(dir, 'text_encoder'), open(dir, 'unet'), open(dir, 'vae_decoder')]);
  return { dir, textEncoder, unet, vae };
}

/** name → [type, shape] of a session's inputs or outputs. */
function contract(metadata: readonly InferenceSession.ValueMetadata[]): Record<string, [string, Array<number | string>]> {
  return Object.fromEntries(
    metadata.map((m) => {
      if (!m.isTensor) throw new Error(`${m.name} is not a tensor`);
      return [m.name, [m.type, [...m.shape]]];
    }),
  );
}

function inputType(session: InferenceSession, name: string): string {
  const m = session.inputMetadata.find((x) => x.name === name);
  if (!m?.isTensor) throw new Error(`no tensor input ${name}`);
  return m.type;
}

function floatTensor(type: string, values: Float32Array, dims: number[]): Tensor {
  return type === 'float16' ? new Tensor('float16', float32ToFloat16(values), dims) : new Tensor('float32', values, dims);
}

function floats(tensor: Tensor | undefined): Float32Array {
  if (!tensor) throw new Error('missing output');
  if (tensor.type === 'float16') return float16ToFloat32(tensor.data as Uint16Array);
  return tensor.data as Float32Array;
}

/** Standard-normal-ish values from a fixed LCG (the weights generator is not under test here). */
function noise(seed: number, count: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    let sum = 0;
    for (let i = 0; i < 12; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      sum += s / 2 ** 32;
    }
    return sum - 6;
  });
}

/** bos, tokens, eos, padded to 77 with `pad` (like the pipeline's tokenizer output). */
function promptIds(tokens: number[], pad = EOS): number[] {
  const ids = [BOS, ...tokens, EOS];
  while (ids.length < SEQ) ids.push(pad);
  return ids;
}

function idsTensor(type: string, rows: number[][]): Tensor {
  const flat = rows.flat();
  return type === 'int64'
    ? new Tensor('int64', BigInt64Array.from(flat, (v) => BigInt(v)), [rows.length, SEQ])
    : new Tensor('int32', Int32Array.from(flat), [rows.length, SEQ]);
}

function timestepTensor(session: InferenceSession, values: number[]): Tensor {
  const m = session.inputMetadata.find((x) => x.name === 'timestep');
  if (!m?.isTensor) throw new Error('no timestep input');
  if (m.type === 'int64') return new Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), [values.length]);
  const dims = m.shape.length === 0 ? [] : [values.length];
  return floatTensor(m.type, Float32Array.from(m.shape.length === 0 ? values.slice(0, 1) : values), dims);
}

function rms(values: Float32Array): number {
  let sum = 0;
  for (const v of values) sum += v * v;
  return Math.sqrt(sum / values.length);
}

/** ‖a − b‖ / ‖a‖. */
function relativeChange(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    norm += a[i]! ** 2;
  }
  return Math.sqrt(diff / norm);
}

function expectFinite(values: Float32Array): void {
  const bad = values.findIndex((v) => !Number.isFinite(v));
  expect(bad, `non-finite value at ${bad}`).toBe(-1);
}

async function encode(model: Model, rows: number[][]): Promise<{ hidden: Float32Array; pooled: Float32Array }> {
  const type = inputType(model.textEncoder, 'input_ids');
  const out = await model.textEncoder.run({ input_ids: idsTensor(type, rows) });
  expect(out.last_hidden_state!.dims).toEqual([rows.length, SEQ, HIDDEN]);
  expect(out.pooler_output!.dims).toEqual([rows.length, HIDDEN]);
  return { hidden: floats(out.last_hidden_state), pooled: floats(out.pooler_output) };
}

interface UnetCall {
  sample: Float32Array;
  timestep: number;
  context: Float32Array;
  timestepCond?: Float32Array;
  side?: [number, number];
}

async function predict(model: Model, call: UnetCall): Promise<Float32Array> {
  const [h, w] = call.side ?? [8, 8];
  const batch = call.sample.length / (4 * h * w);
  const type = inputType(model.unet, 'sample');
  const feeds: Record<string, Tensor> = {
    sample: floatTensor(type, call.sample, [batch, 4, h, w]),
    timestep: timestepTensor(model.unet, Array(batch).fill(call.timestep)),
    encoder_hidden_states: floatTensor(type, call.context, [batch, SEQ, HIDDEN]),
  };
  if (model.unet.inputNames.includes('timestep_cond')) {
    feeds.timestep_cond = floatTensor(type, call.timestepCond ?? noise(99, batch * 256), [batch, 256]);
  }
  const out = await model.unet.run(feeds);
  expect(out.out_sample!.dims).toEqual([batch, 4, h, w]);
  return floats(out.out_sample);
}

async function decode(model: Model, latents: Float32Array, h: number, w: number): Promise<Float32Array> {
  const batch = latents.length / (4 * h * w);
  const type = inputType(model.vae, 'latent_sample');
  const out = await model.vae.run({ latent_sample: floatTensor(type, latents, [batch, 4, h, w]) });
  expect(out.sample!.dims).toEqual([batch, 3, 8 * h, 8 * w]);
  return floats(out.sample);
}

/** Text encoder → UNet → VAE once, each output checked for shape and finiteness. */
async function runChain(model: Model, batch: number): Promise<{ hidden: Float32Array; eps: Float32Array; image: Float32Array }> {
  const rows = Array.from({ length: batch }, (_, i) => promptIds([320, 1125 + i, 539]));
  const { hidden, pooled } = await encode(model, rows);
  const eps = await predict(model, { sample: noise(1, batch * 4 * 64), timestep: 801, context: hidden });
  const image = await decode(model, noise(2, batch * 4 * 64), 8, 8);
  for (const values of [hidden, pooled, eps, image]) expectFinite(values);
  return { hidden, eps, image };
}

async function hashTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    out[path.relative(dir, full)] = createHash('sha256').update(await readFile(full)).digest('hex');
  }
  return out;
}

async function readJson(dir: string, file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path.join(dir, file), 'utf8')) as Record<string, unknown>;
}

describe('default tiny model', () => {
  let model: Model;

  beforeAll(async () => {
    model = await openModel(await tinyModel());
  });

  it('writes the diffusers ONNX export layout', async () => {
    const files = Object.keys(await hashTree(model.dir)).sort();
    expect(files).toEqual(
      [
        'feature_extractor/preprocessor_config.json',
        'model_index.json',
        'safety_checker/model.onnx',
        'scheduler/scheduler_config.json',
        'text_encoder/config.json',
        'text_encoder/model.onnx',
        'tokenizer/LICENSE',
        'tokenizer/merges.txt',
        'tokenizer/special_tokens_map.json',
        'tokenizer/tokenizer_config.json',
        'tokenizer/vocab.json',
        'unet/config.json',
        'unet/model.onnx',
        'unet/model.onnx_data',
        'vae_decoder/config.json',
        'vae_decoder/model.onnx',
      ].map((f) => path.normalize(f)),
    );
    const index = await readJson(model.dir, 'model_index.json');
    expect(index).toMatchObject({
      _class_name: 'OnnxStableDiffusionPipeline',
      scheduler: ['diffusers', 'PNDMScheduler'],
      text_encoder: ['diffusers', 'OnnxRuntimeModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'OnnxRuntimeModel'],
      vae_decoder: ['diffusers', 'OnnxRuntimeModel'],
      safety_checker: ['diffusers', 'OnnxRuntimeModel'],
      feature_extractor: ['transformers', 'CLIPImageProcessor'],
      requires_safety_checker: true,
    });
    expect(index._diffusers_version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(await readJson(model.dir, 'scheduler/scheduler_config.json')).toEqual({
      _class_name: 'PNDMScheduler',
      _diffusers_version: index._diffusers_version,
      beta_end: 0.012,
      beta_schedule: 'scaled_linear',
      beta_start: 0.00085,
      clip_sample: false,
      num_train_timesteps: 1000,
      prediction_type: 'epsilon',
      set_alpha_to_one: false,
      skip_prk_steps: true,
      steps_offset: 1,
      timestep_spacing: 'leading',
      trained_betas: null,
    });
    const tokenizer = await readJson(model.dir, 'tokenizer/tokenizer_config.json');
    expect(tokenizer).toMatchObject({
      model_max_length: 77,
      tokenizer_class: 'CLIPTokenizer',
      bos_token: { content: '<|startoftext|>' },
      eos_token: { content: '<|endoftext|>' },
      unk_token: { content: '<|endoftext|>' },
      pad_token: '<|endoftext|>',
    });
    expect(await readJson(model.dir, 'tokenizer/special_tokens_map.json')).toMatchObject({ pad_token: '<|endoftext|>' });
    const vocabAsset = await readFile(new URL('../assets/clip-tokenizer/vocab.json', import.meta.url));
    expect((await readFile(path.join(model.dir, 'tokenizer/vocab.json'))).equals(vocabAsset)).toBe(true);
    expect(await readJson(model.dir, 'text_encoder/config.json')).toMatchObject({ hidden_size: HIDDEN, max_position_embeddings: 77 });
    expect(await readJson(model.dir, 'unet/config.json')).toMatchObject({
      sample_size: 8,
      in_channels: 4,
      out_channels: 4,
      cross_attention_dim: HIDDEN,
      time_cond_proj_dim: null,
    });
    expect(await readJson(model.dir, 'vae_decoder/config.json')).toMatchObject({ scaling_factor: 0.18215, latent_channels: 4 });
  });

  it('stays small', async () => {
    let total = 0;
    for (const file of Object.keys(await hashTree(model.dir))) total += (await stat(path.join(model.dir, file))).size;
    expect(total).toBeLessThan(4 * 1024 * 1024);
    expect(TINY_MODEL_NOTE).toMatch(/random weights/);
  });

  it('writes opset-17 models and keeps large unet tensors in model.onnx_data', async () => {
    const unet = decodeModel(await readFile(path.join(model.dir, 'unet/model.onnx')));
    expect(unet.ir_version).toBe(8);
    expect(unet.opset_import).toEqual([{ domain: '', version: 17 }]);
    const external = unet.graph.initializer.filter((t) => t.data_location === 1);
    expect(external.length).toBeGreaterThan(5);
    let end = 0;
    for (const tensor of external) {
      const entries = Object.fromEntries((tensor.external_data ?? []).map((e) => [e.key, e.value]));
      expect(entries.location).toBe('model.onnx_data');
      expect(Number(entries.offset)).toBe(end);
      end += Number(entries.length);
    }
    expect((await stat(path.join(model.dir, 'unet/model.onnx_data'))).size).toBe(end);
    const ops = new Set(unet.graph.node.map((n) => n.op_type));
    for (const op of ['Conv', 'Sin', 'Cos', 'Softmax', 'InstanceNormalization', 'MatMul']) expect(ops).toContain(op);
  });

  it('declares the export tensor contract', () => {
    expect(model.textEncoder.inputNames).toEqual(['input_ids']);
    expect(contract(model.textEncoder.inputMetadata)).toEqual({ input_ids: ['int32', ['batch', 77]] });
    expect(contract(model.textEncoder.outputMetadata)).toEqual({
      last_hidden_state: ['float32', ['batch', 77, HIDDEN]],
      pooler_output: ['float32', ['batch', HIDDEN]],
    });
    expect(model.unet.inputNames).toEqual(['sample', 'timestep', 'encoder_hidden_states']);
    expect(contract(model.unet.inputMetadata)).toEqual({
      sample: ['float32', ['batch', 4, 'height', 'width']],
      timestep: ['int64', ['batch']],
      encoder_hidden_states: ['float32', ['batch', 77, HIDDEN]],
    });
    expect(contract(model.unet.outputMetadata)).toEqual({ out_sample: ['float32', ['batch', 4, 'height', 'width']] });
    expect(contract(model.vae.inputMetadata)).toEqual({ latent_sample: ['float32', ['batch', 4, 'height', 'width']] });
    expect(model.vae.outputNames).toEqual(['sample']);
    const [type, shape] = contract(model.vae.outputMetadata).sample!;
    expect(type).toBe('float32');
    expect(shape.slice(0, 2)).toEqual(['batch', 3]);
  });

  it('text encoder: each state depends on its token, its position and the tokens before it', async () => {
    const a = promptIds([320, 1125, 539, 320, 2368]);
    const changed = promptIds([320, 1125, 539, 320, 1929]); // last word differs (position 5)
    const swapped = promptIds([1125, 320, 539, 320, 2368]); // same tokens, positions 1 and 2 swapped
    const { hidden, pooled } = await encode(model, [a, changed, swapped]);
    expectFinite(hidden);
    const row = (r: number, pos: number) => hidden.subarray((r * SEQ + pos) * HIDDEN, (r * SEQ + pos + 1) * HIDDEN);
    // Causal: positions before the change are untouched, the changed one and all after move.
    for (let pos = 0; pos < 5; pos++) expect(relativeChange(row(0, pos), row(1, pos))).toBe(0);
    for (const pos of [5, 6, 40, 76]) expect(relativeChange(row(0, pos), row(1, pos))).toBeGreaterThan(0.01);
    expect(relativeChange(row(0, 1), row(2, 1))).toBeGreaterThan(0.1);
    expect(relativeChange(row(0, 76), row(2, 76))).toBeGreaterThan(0.001);
    // Pooled output: the state at the first end-of-text token (position 6 here).
    for (let r = 0; r < 3; r++) {
      const p = pooled.subarray(r * HIDDEN, (r + 1) * HIDDEN);
      for (let i = 0; i < HIDDEN; i++) expect(p[i]).toBeCloseTo(row(r, 6)[i]!, 5);
    }
    // Like CLIP's final LayerNorm: unit-scale features.
    expect(rms(hidden)).toBeGreaterThan(0.5);
    expect(rms(hidden)).toBeLessThan(2);
  });

  it('unet: noise-sized output that depends on the prompt, the sample and the timestep', async () => {
    const { hidden } = await encode(model, [promptIds([320, 1125, 539, 320, 2368]), promptIds([])]);
    const text = hidden.subarray(0, SEQ * HIDDEN);
    const empty = hidden.subarray(SEQ * HIDDEN);
    const sample = noise(3, 4 * 64);
    const base = await predict(model, { sample, timestep: 501, context: text });
    expectFinite(base);
    expect(rms(base)).toBeGreaterThan(0.3);
    expect(rms(base)).toBeLessThan(3);
    expect(relativeChange(base, await predict(model, { sample, timestep: 501, context: empty }))).toBeGreaterThan(0.02);
    expect(relativeChange(base, await predict(model, { sample: noise(4, 4 * 64), timestep: 501, context: text }))).toBeGreaterThan(0.3);
    expect(relativeChange(base, await predict(model, { sample, timestep: 21, context: text }))).toBeGreaterThan(0.1);
    expect(relativeChange(base, await predict(model, { sample, timestep: 481, context: text }))).toBeGreaterThan(0.005);
  });

  it('unet: batch rows are independent and other sizes work', async () => {
    const { hidden } = await encode(model, [promptIds([320]), promptIds([2368])]);
    const samples = noise(5, 2 * 4 * 6 * 10);
    const both = await predict(model, { sample: samples, timestep: 301, context: hidden, side: [6, 10] });
    const first = await predict(model, {
      sample: samples.subarray(0, 4 * 60),
      timestep: 301,
      context: hidden.subarray(0, SEQ * HIDDEN),
      side: [6, 10],
    });
    for (let i = 0; i < first.length; i++) expect(both[i]).toBeCloseTo(first[i]!, 4);
  });

  it('vae decoder: an 8× larger image in [-1, 1] with smooth structure', async () => {
    const latents = noise(6, 4 * 8 * 12).map((v) => v / 0.18215);
    const image = await decode(model, latents, 8, 12);
    expectFinite(image);
    expect(Math.min(...image)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...image)).toBeLessThanOrEqual(1);
    // Not flat grey: spread across the range; not noise: neighbours correlate strongly.
    const mean = image.reduce((a, b) => a + b, 0) / image.length;
    const centred = image.map((v) => v - mean);
    expect(rms(centred)).toBeGreaterThan(0.15);
    const w = 96;
    let num = 0;
    let den = 0;
    for (let i = 0; i + 1 < centred.length; i++) {
      if ((i + 1) % w === 0) continue;
      num += centred[i]! * centred[i + 1]!;
      den += centred[i]! ** 2;
    }
    expect(num / den).toBeGreaterThan(0.8);
    const other = await decode(model, noise(7, 4 * 8 * 12).map((v) => v / 0.18215), 8, 12);
    expect(relativeChange(image, other)).toBeGreaterThan(0.3);
  });

  it('regenerates byte-identical files, and other weights for another seed', async () => {
    const first = await hashTree(model.dir);
    expect(await hashTree(await tinyModel())).toEqual(first);
    const reseeded = await hashTree(await tinyModel({ seed: 7 }));
    expect(reseeded['model_index.json']).toBe(first['model_index.json']);
    expect(reseeded[path.normalize('unet/model.onnx_data')]).not.toBe(first[path.normalize('unet/model.onnx_data')]);
    expect(reseeded[path.normalize('text_encoder/model.onnx')]).not.toBe(first[path.normalize('text_encoder/model.onnx')]);
  });

  it('rejects options it cannot honour', async () => {
    await expect(writeTinyModel(path.join(model.dir, 'never'), { fixedSize: 60 })).rejects.toThrow(/fixedSize/);
    await expect(writeTinyModel(path.join(model.dir, 'never'), { fixedBatch: 0 })).rejects.toThrow(/fixedBatch/);
    await expect(
      writeTinyModel(path.join(model.dir, 'never'), { dtype: 'bfloat16' as TinyModelOptions['dtype'] }),
    ).rejects.toThrow(/dtype/);
  });
});

describe('variants', () => {
  let reference: Awaited<ReturnType<typeof runChain>>;

  beforeAll(async () => {
    reference = await runChain(await openModel(await tinyModel()), 2);
  });

  it('float16: float16 inputs, outputs and weights, same numbers within fp16 precision', async () => {
    const model = await openModel(await tinyModel({ dtype: 'float16' }));
    for (const session of [model.textEncoder, model.unet, model.vae]) {
      for (const [name, [type]] of Object.entries({ ...contract(session.inputMetadata), ...contract(session.outputMetadata) })) {
        if (!['input_ids', 'timestep'].includes(name)) expect(type, name).toBe('float16');
      }
    }
    const unet = decodeModel(await readFile(path.join(model.dir, 'unet/model.onnx')));
    expect(unet.graph.initializer.filter((t) => t.name.endsWith('.weight')).every((t) => t.data_type === 10)).toBe(true);
    const out = await runChain(model, 2);
    expect(relativeChange(reference.hidden, out.hidden)).toBeLessThan(0.01);
    expect(relativeChange(reference.eps, out.eps)).toBeLessThan(0.02);
    expect(relativeChange(reference.image, out.image)).toBeLessThan(0.02);
    expect(await readJson(model.dir, 'text_encoder/config.json')).toMatchObject({ torch_dtype: 'float16' });
  });

  it('int64 input_ids', async () => {
    const model = await openModel(await tinyModel({ inputIds: 'int64' }));
    expect(contract(model.textEncoder.inputMetadata)).toEqual({ input_ids: ['int64', ['batch', 77]] });
    const out = await runChain(model, 2);
    expect(relativeChange(reference.hidden, out.hidden)).toBeLessThan(1e-6);
  });

  it('float scalar timestep', async () => {
    const model = await openModel(await tinyModel({ timestep: 'float-scalar' }));
    expect(contract(model.unet.inputMetadata).timestep).toEqual(['float32', []]);
    const out = await runChain(model, 2);
    expect(relativeChange(reference.eps, out.eps)).toBeLessThan(1e-5);
  });

  it('float [batch] timestep', async () => {
    const model = await openModel(await tinyModel({ timestep: 'float', dtype: 'float16' }));
    expect(contract(model.unet.inputMetadata).timestep).toEqual(['float16', ['batch']]);
    await runChain(model, 1);
  });

  it('LCM: timestep_cond input and LCMScheduler config', async () => {
    const model = await openModel(await tinyModel({ lcm: true }));
    expect(contract(model.unet.inputMetadata).timestep_cond).toEqual(['float32', ['batch', 256]]);
    const scheduler = await readJson(model.dir, 'scheduler/scheduler_config.json');
    expect(scheduler).toMatchObject({ _class_name: 'LCMScheduler', original_inference_steps: 50, beta_schedule: 'scaled_linear' });
    expect(await readJson(model.dir, 'model_index.json')).toMatchObject({ scheduler: ['diffusers', 'LCMScheduler'] });
    expect(await readJson(model.dir, 'unet/config.json')).toMatchObject({ time_cond_proj_dim: 256 });
    const { hidden } = await runChain(model, 1);
    const sample = noise(8, 4 * 64);
    const a = await predict(model, { sample, timestep: 499, context: hidden, timestepCond: noise(9, 256) });
    const b = await predict(model, { sample, timestep: 499, context: hidden, timestepCond: noise(10, 256) });
    expect(relativeChange(a, b)).toBeGreaterThan(0.001);
  });

  it('weights.pb and inline weights', async () => {
    const pb = await tinyModel({ externalData: 'weights.pb' });
    expect((await readdir(path.join(pb, 'unet'))).sort()).toEqual(['config.json', 'model.onnx', 'weights.pb']);
    expect(relativeChange(reference.eps, (await runChain(await openModel(pb), 2)).eps)).toBe(0);
    const inline = await tinyModel({ externalData: 'none' });
    expect((await readdir(path.join(inline, 'unet'))).sort()).toEqual(['config.json', 'model.onnx']);
    expect(relativeChange(reference.eps, (await runChain(await openModel(inline), 2)).eps)).toBe(0);
  });

  it('static size and batch', async () => {
    const model = await openModel(await tinyModel({ fixedSize: 64, fixedBatch: 2 }));
    expect(contract(model.unet.inputMetadata).sample).toEqual(['float32', [2, 4, 8, 8]]);
    expect(contract(model.unet.inputMetadata).timestep).toEqual(['int64', [2]]);
    expect(contract(model.textEncoder.inputMetadata).input_ids).toEqual(['int32', [2, 77]]);
    expect(contract(model.vae.outputMetadata).sample).toEqual(['float32', [2, 3, 64, 64]]);
    expect(await readJson(model.dir, 'unet/config.json')).toMatchObject({ sample_size: 8 });
    await runChain(model, 2);
    const bigger = await tinyModel({ fixedSize: 128 });
    expect(await readJson(bigger, 'unet/config.json')).toMatchObject({ sample_size: 16 });
    expect(await readJson(bigger, 'vae_decoder/config.json')).toMatchObject({ sample_size: 128 });
  });

  it('SD 2.x padding and v-prediction', async () => {
    const dir = await tinyModel({ padWithExclamation: true, predictionType: 'v_prediction' });
    expect(await readJson(dir, 'tokenizer/tokenizer_config.json')).toMatchObject({ pad_token: '!' });
    expect(await readJson(dir, 'tokenizer/special_tokens_map.json')).toMatchObject({ pad_token: '!' });
    expect(await readJson(dir, 'scheduler/scheduler_config.json')).toMatchObject({ prediction_type: 'v_prediction' });
    const model = await openModel(dir);
    // "!" is id 0: the pooled state is still the one at the end-of-text token.
    const { hidden, pooled } = await encode(model, [promptIds([320, 2368], 0)]);
    for (let i = 0; i < HIDDEN; i++) expect(pooled[i]).toBeCloseTo(hidden[3 * HIDDEN + i]!, 5);
    await runChain(model, 1);
  });
});

describe('safety checker', () => {
  /** clip_input like the feature extractor's (normalised, about −2…2) and a 0…1 image. */
  async function check(session: InferenceSession, batch: number, side = 16) {
    const type = inputType(session, 'clip_input');
    const clip = noise(11, batch * 3 * 224 * 224).map((v) => v * 0.5);
    const image = noise(12, batch * side * side * 3).map((v) => Math.min(1, Math.max(0, 0.5 + v / 6)));
    const out = await session.run({
      clip_input: floatTensor(type, clip, [batch, 3, 224, 224]),
      images: floatTensor(type, image, [batch, side, side, 3]),
    });
    expect(out.has_nsfw_concepts!.type).toBe('bool');
    expect(out.out_images!.dims).toEqual([batch, side, side, 3]);
    return { flags: [...(out.has_nsfw_concepts!.data as Uint8Array)].map(Boolean), image, out: floats(out.out_images) };
  }

  it('has diffusers’ ONNX interface and the CLIP feature extractor config', async () => {
    const dir = await tinyModel();
    const session = await open(dir, 'safety_checker');
    expect(session.inputNames).toEqual(['clip_input', 'images']);
    expect(contract(session.inputMetadata)).toEqual({
      clip_input: ['float32', ['batch', 'channels', 'height', 'width']],
      images: ['float32', ['batch', 'height', 'width', 'channels']],
    });
    expect(contract(session.outputMetadata)).toEqual({
      out_images: ['float32', ['batch', 'height', 'width', 'channels']],
      has_nsfw_concepts: ['bool', ['batch']],
    });
    expect(await readJson(dir, 'feature_extractor/preprocessor_config.json')).toMatchObject({
      crop_size: { height: 224, width: 224 },
      size: { shortest_edge: 224 },
      resample: 3,
      do_rescale: true,
      image_mean: [0.48145466, 0.4578275, 0.40821073],
      image_std: [0.26862954, 0.26130258, 0.27577711],
    });
  });

  it('pass-all (the default) flags nothing and returns the images as they were', async () => {
    const { flags, image, out } = await check(await open(await tinyModel(), 'safety_checker'), 2);
    expect(flags).toEqual([false, false]);
    expect(relativeChange(image, out)).toBe(0);
  });

  it('flag-all flags every image and blacks it out', async () => {
    const { flags, out } = await check(await open(await tinyModel({ safetyChecker: 'flag-all' }), 'safety_checker'), 3, 8);
    expect(flags).toEqual([true, true, true]);
    expect(out.every((v) => v === 0)).toBe(true);
  });

  it('follows the model dtype', async () => {
    const session = await open(await tinyModel({ dtype: 'float16', safetyChecker: 'flag-all' }), 'safety_checker');
    expect(contract(session.inputMetadata).clip_input![0]).toBe('float16');
    expect(contract(session.outputMetadata).has_nsfw_concepts![0]).toBe('bool');
    expect((await check(session, 1)).flags).toEqual([true]);
  });

  it('none: an export without a checker, and rewriting a folder removes an old one', async () => {
    const dir = await tinyModel();
    await writeTinyModel(dir, { safetyChecker: 'none' });
    const files = Object.keys(await hashTree(dir));
    expect(files.filter((f) => /safety_checker|feature_extractor/.test(f))).toEqual([]);
    expect(await readJson(dir, 'model_index.json')).toMatchObject({
      safety_checker: [null, null],
      feature_extractor: [null, null],
      requires_safety_checker: false,
    });
    await expect(writeTinyModel(path.join(dir, 'never'), { safetyChecker: 'sometimes' as TinyModelOptions['safetyChecker'] })).rejects.toThrow(
      /safetyChecker/,
    );
  });
});
