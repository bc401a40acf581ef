/**
 * Writes the tiny random-weight Stable Diffusion:
 *   npm run model:tiny -- [--out DIR] [--dtype float32|float16] [--input-ids int32|int64]
 *     [--timestep int64|float|float-scalar] [--external-data none|onnx_data|weights.pb] [--lcm]
 *     [--prediction-type epsilon|v_prediction] [--pad-with-exclamation] [--fixed-size PX]
 *     [--fixed-batch N] [--safety-checker pass-all|flag-all|none] [--seed N]
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_TINY_MODEL_DIR, TINY_MODEL_NOTE, writeTinyModel, type TinyModelOptions } from './tiny-model/index.js';

const USAGE = `usage: npm run model:tiny -- [--out DIR] [--dtype float32|float16] [--input-ids int32|int64]
  [--timestep int64|float|float-scalar] [--external-data none|onnx_data|weights.pb] [--lcm]
  [--prediction-type epsilon|v_prediction] [--pad-with-exclamation] [--fixed-size PX]
  [--fixed-batch N] [--safety-checker pass-all|flag-all|none] [--seed N]`;

function integer(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new RangeError(`--${flag} expects a non-negative integer; got ${value}`);
  return Number(value);
}

function parseCli(argv: string[]): { out: string; options: TinyModelOptions } | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      out: { type: 'string' },
      dtype: { type: 'string' },
      'input-ids': { type: 'string' },
      timestep: { type: 'string' },
      'external-data': { type: 'string' },
      lcm: { type: 'boolean' },
      'prediction-type': { type: 'string' },
      'pad-with-exclamation': { type: 'boolean' },
      'fixed-size': { type: 'string' },
      'fixed-batch': { type: 'string' },
      'safety-checker': { type: 'string' },
      seed: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  // Values are checked against the allowed sets by writeTinyModel.
  const options: TinyModelOptions = {
    dtype: values.dtype as TinyModelOptions['dtype'],
    inputIds: values['input-ids'] as TinyModelOptions['inputIds'],
    timestep: values.timestep as TinyModelOptions['timestep'],
    externalData: values['external-data'] as TinyModelOptions['externalData'],
    lcm: values.lcm,
    predictionType: values['prediction-type'] as TinyModelOptions['predictionType'],
    padWithExclamation: values['pad-with-exclamation'],
    fixedSize: integer('fixed-size', values['fixed-size']),
    fixedBatch: integer('fixed-batch', values['fixed-batch']),
    safetyChecker: values['safety-checker'] as TinyModelOptions['safetyChecker'],
    seed: integer('seed', values.seed),
  };
  return { out: values.out ?? DEFAULT_TINY_MODEL_DIR, options };
}

async function listSizes(dir: string, prefix = ''): Promise<string[]> {
  const lines: string[] = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) lines.push(...(await listSizes(full, `${prefix}${entry.name}/`)));
    else lines.push(`${String((await stat(full)).size).padStart(9)}  ${prefix}${entry.name}`);
  }
  return lines;
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseCli>;
  try {
    parsed = parseCli(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  if (parsed === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const started = performance.now();
  try {
    await writeTinyModel(parsed.out, parsed.options);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exitCode = error instanceof RangeError ? 2 : 1;
    return;
  }
  const ms = Math.round(performance.now() - started);
  const sizes = (await listSizes(parsed.out)).join('\n');
  process.stdout.write(`wrote ${path.resolve(parsed.out)} in ${ms} ms\n${sizes}\n${TINY_MODEL_NOTE}\n`);
}

await main();
