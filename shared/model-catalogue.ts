import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

/**
 * The models this deployment serves, each with its export, its Dreambooth trigger words, its own
 * worker bounds (Ray Serve's per-deployment autoscaling_config) and its own queue. One is the
 * default: the model of a request whose prompt names no trigger word.
 *
 * Where it comes from, first match wins:
 *  - MODELS_FILE: a JSON catalogue (format below, validated here with errors naming entry and field);
 *  - MODEL_DIR (with MODEL_NAME): a one-model catalogue, as before catalogues existed;
 *  - nothing: the two tiny random-weight models `npm start` writes when missing, a base and a
 *    "fine-tuned" one (other weights) whose trigger word is the tutorial's `unqtkn`.
 *
 * Queue names: `generate` for the default model, `generate.<name>` for the others, unless an
 * entry sets `queue` (to keep a queue when the default changes). One queue per model: a worker
 * holding a model takes only that model's jobs.
 */

export interface ModelAutoscaling {
  minWorkers: number;
  initialWorkers: number;
  /** Undefined: as many as the machine's slots. */
  maxWorkers: number | undefined;
}

export interface ModelEntry {
  name: string;
  /** The ONNX export (absolute). */
  dir: string;
  /** The BullMQ queue of the model's jobs. */
  queue: string;
  /** Whole words that route a prompt to this model (case-insensitive), as written in the catalogue. */
  triggerWords: string[];
  isDefault: boolean;
  autoscaling: ModelAutoscaling;
  /** `npm start` writes the tiny random-weight model with this weight seed when `dir` holds no model. */
  tinySeed?: number;
}

/** The name a request gives to let the service choose (the default when `model` is absent). */
export const AUTO_MODEL = 'auto';
export const DEFAULT_QUEUE = 'generate';

export const BUILTIN_BASE_MODEL = 'tiny-sd';
export const BUILTIN_FINETUNED_MODEL = 'tiny-sd-unqtkn';
export const BUILTIN_TRIGGER_WORD = 'unqtkn';
/** The tiny generator's default weight seed (the base), and the fine-tuned stand-in's. */
export const BUILTIN_BASE_SEED = 42;
export const BUILTIN_FINETUNED_SEED = 4242;

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** A trigger word: letters, digits, _ and - (no spaces: one whole word of the prompt). */
const TRIGGER_WORD = /^[\p{L}\p{N}_-]{1,64}$/u;
const QUEUE_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

const count = (field: string, min: number) =>
  z
    .number({ error: `${field} must be a whole number` })
    .int({ error: `${field} must be a whole number` })
    .min(min, { error: `${field} must be at least ${min}` })
    .max(1024, { error: `${field} must be at most 1024` });

const EntrySchema = z.strictObject(
  {
    name: z
      .string({ error: 'name is required (a string)' })
      .regex(MODEL_NAME, { error: 'name must be 1 to 64 letters, digits, _ . -, starting with a letter or digit' })
      .refine((n) => n.toLowerCase() !== AUTO_MODEL, { error: `name must not be "${AUTO_MODEL}" (a request's word for "route by the prompt")` }),
    dir: z.string({ error: 'dir is required: the directory of the ONNX export' }).min(1, { error: 'dir must not be empty' }),
    default: z.boolean({ error: 'default must be true or false' }).optional(),
    trigger_words: z
      .array(z.string({ error: 'a trigger word must be a string' }).regex(TRIGGER_WORD, { error: 'a trigger word is one word: letters, digits, _ or - (at most 64)' }), {
        error: 'trigger_words must be a list of words',
      })
      .optional(),
    queue: z.string({ error: 'queue must be a string' }).regex(QUEUE_NAME, { error: 'queue must be letters, digits, _ . - (no colon)' }).optional(),
    autoscaling: z
      .strictObject(
        {
          min_workers: count('min_workers', 0).optional(),
          initial_workers: count('initial_workers', 0).optional(),
          max_workers: count('max_workers', 1).optional(),
        },
        { error: (i) => (i.code === 'unrecognized_keys' ? `unknown field: ${i.keys.join(', ')} (expected min_workers, initial_workers, max_workers)` : 'autoscaling must be an object') },
      )
      .optional(),
  },
  { error: (i) => (i.code === 'unrecognized_keys' ? `unknown field: ${i.keys.join(', ')}` : 'each model must be an object') },
);

const CatalogueSchema = z.strictObject(
  { models: z.array(EntrySchema, { error: 'models must be a list of models' }).min(1, { error: 'models must list at least one model' }) },
  { error: (i) => (i.code === 'unrecognized_keys' ? `unknown field: ${i.keys.join(', ')}` : 'the catalogue must be a JSON object {"models": [...]}') },
);

export type CatalogueFile = z.input<typeof CatalogueSchema>;

/** Bounds an entry takes when it gives none: the AUTOSCALER_* variables. */
export type AutoscalingDefaults = ModelAutoscaling;

/** A catalogue problem: which entry (index and name), which field, what is wrong. */
export class CatalogueError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
    this.name = 'CatalogueError';
  }
}

const where = (models: unknown[], index: number) => {
  const name = (models[index] as { name?: unknown } | undefined)?.name;
  return `models[${index}]${typeof name === 'string' ? ` (${JSON.stringify(name)})` : ''}`;
};

export const defaultQueueFor = (name: string, isDefault: boolean) => (isDefault ? DEFAULT_QUEUE : `${DEFAULT_QUEUE}.${name}`);

/** Validates a parsed catalogue; throws CatalogueError naming each entry and field. */
export function parseCatalogue(input: unknown, defaults: AutoscalingDefaults, cwd = process.cwd()): ModelEntry[] {
  const parsed = CatalogueSchema.safeParse(input);
  const models = Array.isArray((input as { models?: unknown } | null)?.models) ? ((input as { models: unknown[] }).models) : [];
  if (!parsed.success) {
    throw new CatalogueError(
      parsed.error.issues.map((issue) => {
        const [top, index, ...rest] = issue.path;
        const field = issue.code === 'unrecognized_keys' ? [...rest.map(String), issue.keys[0] ?? ''].join('.') : rest.map(String).join('.');
        if (top === 'models' && typeof index === 'number') return `${where(models, index)}: ${field ? `${field}: ` : ''}${issue.message}`;
        return `${issue.path.map(String).join('.') || 'catalogue'}: ${issue.message}`;
      }),
    );
  }
  const entries = parsed.data.models;
  const problems: string[] = [];
  const defaultsMarked = entries.flatMap((e, i) => (e.default ? [i] : []));
  if (defaultsMarked.length > 1) problems.push(`${where(models, defaultsMarked[1] as number)}: default: only one model may be the default (${where(models, defaultsMarked[0] as number)} already is)`);
  const defaultIndex = defaultsMarked[0] ?? 0;
  const names = new Map<string, number>();
  const triggers = new Map<string, number>();
  const queues = new Map<string, number>();
  const result: ModelEntry[] = [];
  entries.forEach((e, i) => {
    const seen = names.get(e.name.toLowerCase());
    if (seen !== undefined) problems.push(`${where(models, i)}: name: ${JSON.stringify(e.name)} is already the name of ${where(models, seen)}`);
    names.set(e.name.toLowerCase(), i);
    const words = e.trigger_words ?? [];
    words.forEach((word, w) => {
      const other = triggers.get(word.toLowerCase());
      if (other !== undefined) problems.push(`${where(models, i)}: trigger_words[${w}]: ${JSON.stringify(word)} is already a trigger word of ${where(models, other)}`);
      else triggers.set(word.toLowerCase(), i);
    });
    const isDefault = i === defaultIndex;
    const queue = e.queue ?? defaultQueueFor(e.name, isDefault);
    const queueOwner = queues.get(queue);
    if (queueOwner !== undefined) problems.push(`${where(models, i)}: queue: ${JSON.stringify(queue)} is already the queue of ${where(models, queueOwner)}`);
    queues.set(queue, i);
    const a = e.autoscaling ?? {};
    const min = a.min_workers ?? defaults.minWorkers;
    const max = a.max_workers ?? defaults.maxWorkers;
    const initial = a.initial_workers ?? Math.min(Math.max(min, defaults.initialWorkers), max ?? Number.MAX_SAFE_INTEGER);
    if (max !== undefined && min > max) problems.push(`${where(models, i)}: autoscaling.min_workers: ${min} exceeds max_workers ${max}`);
    else if (initial < min || (max !== undefined && initial > max)) problems.push(`${where(models, i)}: autoscaling.initial_workers: ${initial} must lie between min_workers ${min} and max_workers ${max ?? '(slots)'}`);
    result.push({
      name: e.name,
      dir: path.resolve(cwd, e.dir),
      queue,
      triggerWords: words,
      isDefault,
      autoscaling: { minWorkers: min, initialWorkers: initial, maxWorkers: max },
    });
  });
  if (problems.length > 0) throw new CatalogueError(problems);
  return result;
}

/** Reads and validates MODELS_FILE; throws CatalogueError (the file's own problems prefixed). */
export function readCatalogueFile(file: string, defaults: AutoscalingDefaults, cwd = process.cwd()): ModelEntry[] {
  let input: unknown;
  try {
    input = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CatalogueError([`cannot read a JSON catalogue from ${file}: ${(err as Error).message}`]);
  }
  return parseCatalogue(input, defaults, cwd);
}

/** A catalogue given as JSON text (MODELS_JSON); `source` names it in errors. */
export function parseCatalogueText(text: string, source: string, defaults: AutoscalingDefaults, cwd = process.cwd()): ModelEntry[] {
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (err) {
    throw new CatalogueError([`${source} is not JSON: ${(err as Error).message}`]);
  }
  return parseCatalogue(input, defaults, cwd);
}

/** MODEL_DIR alone: a catalogue of one, on the `generate` queue as before. */
export function singleModelCatalogue(dir: string, name: string | undefined, defaults: AutoscalingDefaults, tinySeed?: number): ModelEntry[] {
  const resolved = path.resolve(dir);
  return [
    {
      name: name ?? path.basename(resolved),
      dir: resolved,
      queue: DEFAULT_QUEUE,
      triggerWords: [],
      isDefault: true,
      autoscaling: defaults,
      ...(tinySeed !== undefined ? { tinySeed } : {}),
    },
  ];
}

/** Nothing configured: the base tiny model (the default) and its "fine-tuned" sibling triggered by `unqtkn`. */
export function builtinCatalogue(defaults: AutoscalingDefaults, root = process.cwd()): ModelEntry[] {
  return [
    {
      name: BUILTIN_BASE_MODEL,
      dir: path.resolve(root, 'models', BUILTIN_BASE_MODEL),
      queue: DEFAULT_QUEUE,
      triggerWords: [],
      isDefault: true,
      autoscaling: defaults,
      tinySeed: BUILTIN_BASE_SEED,
    },
    {
      name: BUILTIN_FINETUNED_MODEL,
      dir: path.resolve(root, 'models', BUILTIN_FINETUNED_MODEL),
      queue: defaultQueueFor(BUILTIN_FINETUNED_MODEL, false),
      triggerWords: [BUILTIN_TRIGGER_WORD],
      isDefault: false,
      autoscaling: defaults,
      tinySeed: BUILTIN_FINETUNED_SEED,
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Routing

export type RoutedBy = 'explicit' | 'default' | `trigger word "${string}"`;

export type RouteResult = { ok: true; model: ModelEntry; routedBy: RoutedBy } | { ok: false; message: string };

/** Trigger words hold letters, digits, _ and - only; anything else a regular expression would read is escaped all the same. */
const escape = (word: string) => word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const matchers = new WeakMap<readonly ModelEntry[], Array<{ model: ModelEntry; word: string; re: RegExp }>>();

function triggerMatchers(catalogue: readonly ModelEntry[]) {
  let list = matchers.get(catalogue);
  if (!list) {
    // A whole word: not preceded or followed by a letter, digit or _ (so `unqtkn` is not found in `unqtkn2`).
    list = catalogue.flatMap((model) =>
      model.triggerWords.map((word) => ({ model, word, re: new RegExp(`(?<![\\p{L}\\p{N}_])${escape(word)}(?![\\p{L}\\p{N}_])`, 'iu') })),
    );
    matchers.set(catalogue, list);
  }
  return list;
}

/**
 * The model a request runs on. `requested` a name: that model (`explicit`), or an error naming the
 * served ones. Absent or `auto`: the model whose trigger word occurs first in the prompt (a whole
 * word, case-insensitive); ambiguity is settled deterministically: the earliest occurrence in the
 * prompt wins, at the same position the longer trigger word, then the model listed first in the
 * catalogue. No trigger word: the default model.
 */
export function routeModel(catalogue: readonly ModelEntry[], requested: string | undefined, prompt: string): RouteResult {
  if (requested !== undefined && requested.toLowerCase() !== AUTO_MODEL) {
    const model = catalogue.find((m) => m.name === requested);
    if (model) return { ok: true, model, routedBy: 'explicit' };
    return { ok: false, message: `unknown model ${JSON.stringify(requested)}; this service serves ${catalogue.map((m) => JSON.stringify(m.name)).join(', ')} (or "${AUTO_MODEL}" to route by the prompt's trigger words)` };
  }
  let best: { model: ModelEntry; word: string; at: number; order: number } | null = null;
  triggerMatchers(catalogue).forEach(({ model, word, re }, order) => {
    const match = re.exec(prompt);
    if (!match) return;
    const at = match.index;
    if (!best || at < best.at || (at === best.at && word.length > best.word.length)) best = { model, word, at, order };
  });
  const found = best as { model: ModelEntry; word: string } | null;
  if (found) return { ok: true, model: found.model, routedBy: `trigger word "${found.word}"` };
  const fallback = catalogue.find((m) => m.isDefault) ?? (catalogue[0] as ModelEntry);
  return { ok: true, model: fallback, routedBy: 'default' };
}

export const defaultModel = (catalogue: readonly ModelEntry[]) => catalogue.find((m) => m.isDefault) ?? (catalogue[0] as ModelEntry);
