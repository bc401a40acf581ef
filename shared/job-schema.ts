import { z } from 'zod';
import type { Config } from './config.js';
import { FORBIDDEN_KEYS, parseBooleanText, parseNumberText } from './request-values.js';
import { BUILTIN_FILTERS, FILTER_NAME_PATTERN, MAX_FILTERS } from './filters.js';
import { DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS } from './webhooks/events.js';
import { DEFAULT_OUTPUT_QUALITY, OUTPUT_FORMATS } from './output-format.js';

/**
 * The generation request as clients send it (snake_case, like diffusers' argument names), and
 * the normalised payload the API enqueues and the worker trusts. One schema for both sides.
 */

/** Scheduler names a request may give: diffusers class names and their short aliases. */
export const SCHEDULER_NAMES = [
  'pndm',
  'ddim',
  'euler',
  'euler_a',
  'dpmpp_2m',
  'dpmpp_2m_karras',
  'lcm',
  'PNDMScheduler',
  'DDIMScheduler',
  'EulerDiscreteScheduler',
  'EulerAncestralDiscreteScheduler',
  'DPMSolverMultistepScheduler',
  'LCMScheduler',
] as const;

/** The diffusers class each request name stands for (the worker's resolveScheduler agrees; a test checks). */
export const SCHEDULER_CLASS: Readonly<Record<(typeof SCHEDULER_NAMES)[number], string>> = {
  pndm: 'PNDMScheduler',
  ddim: 'DDIMScheduler',
  euler: 'EulerDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  dpmpp_2m: 'DPMSolverMultistepScheduler',
  dpmpp_2m_karras: 'DPMSolverMultistepScheduler',
  lcm: 'LCMScheduler',
  PNDMScheduler: 'PNDMScheduler',
  DDIMScheduler: 'DDIMScheduler',
  EulerDiscreteScheduler: 'EulerDiscreteScheduler',
  EulerAncestralDiscreteScheduler: 'EulerAncestralDiscreteScheduler',
  DPMSolverMultistepScheduler: 'DPMSolverMultistepScheduler',
  LCMScheduler: 'LCMScheduler',
};

export const MAX_SEED = 2 ** 32 - 1;

/** The largest first seed of a job of `numImages` images: its last image's seed is then MAX_SEED. */
export const maxSeedFor = (numImages: number) => MAX_SEED - numImages + 1;

export type RequestLimits = Config['limits'];

/** The longest per-request deadline a client may ask for (JOB_MAX_RUN_S caps it further). */
export const MAX_TIMEOUT_S = 24 * 3600;

const isHttpUrl = (value: string) => {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
};

export function makeGenerationRequestSchema(limits: RequestLimits) {
  const side = (field: string) =>
    z
      .number({ error: `${field} must be a number` })
      .int({ error: `${field} must be a whole number of pixels` })
      .multipleOf(8, { error: `${field} must be a multiple of 8` })
      .min(limits.minImageSize, { error: `${field} must be at least ${limits.minImageSize}` })
      .max(limits.maxImageSize, { error: `${field} must be at most ${limits.maxImageSize}` });

  return z
    .strictObject(
      {
        prompt: z
          .string({ error: (i) => (i.input === undefined ? 'prompt is required' : 'prompt must be a string') })
          .trim()
          .min(1, { error: 'prompt must not be empty' })
          .max(limits.maxPromptChars, { error: `prompt must be at most ${limits.maxPromptChars} characters` }),
        negative_prompt: z
          .string({ error: 'negative_prompt must be a string' })
          .max(limits.maxPromptChars, { error: `negative_prompt must be at most ${limits.maxPromptChars} characters` })
          .optional(),
        width: side('width').optional(),
        height: side('height').optional(),
        img_size: side('img_size').optional(),
        num_inference_steps: z
          .number({ error: 'num_inference_steps must be a number' })
          .int({ error: 'num_inference_steps must be a whole number' })
          .min(1, { error: 'num_inference_steps must be at least 1' })
          .max(limits.maxSteps, { error: `num_inference_steps must be at most ${limits.maxSteps}` })
          .optional(),
        guidance_scale: z
          .number({ error: 'guidance_scale must be a number' })
          .min(0, { error: 'guidance_scale must be at least 0' })
          .max(50, { error: 'guidance_scale must be at most 50' })
          .optional(),
        seed: z
          .number({ error: 'seed must be a number' })
          .int({ error: 'seed must be a whole number' })
          .min(0, { error: 'seed must be at least 0' })
          .max(MAX_SEED, { error: `seed must be at most ${MAX_SEED}` })
          .optional(),
        num_images: z
          .number({ error: 'num_images must be a number' })
          .int({ error: 'num_images must be a whole number' })
          .min(1, { error: 'num_images must be at least 1' })
          .max(limits.maxNumImages, { error: `num_images must be at most ${limits.maxNumImages}` })
          .optional(),
        scheduler: z
          .enum(SCHEDULER_NAMES, { error: `scheduler must be one of: ${SCHEDULER_NAMES.join(', ')}` })
          .optional(),
        model: z
          .string({ error: 'model must be a string' })
          .min(1, { error: 'model must not be empty' })
          .optional()
          .meta({ description: 'A served model\'s name (GET /v1/models), or `auto` (the default): the model whose trigger word the prompt holds, else the default model.' }),
        webhook: z
          .strictObject(
            {
              url: z
                .string({ error: (i) => (i.input === undefined ? 'webhook.url is required' : 'webhook.url must be a string') })
                .max(2048, { error: 'webhook.url must be at most 2048 characters' })
                .refine(isHttpUrl, { error: 'webhook.url must be an absolute http or https URL' }),
              events: z
                .array(z.enum(WEBHOOK_EVENTS, { error: `webhook.events may hold: ${WEBHOOK_EVENTS.join(', ')}` }), {
                  error: 'webhook.events must be a list of event names',
                })
                .min(1, { error: 'webhook.events must name at least one event (or be left out)' })
                .optional(),
            },
            {
              error: (i) =>
                i.code === 'unrecognized_keys' ? `unknown field: webhook.${i.keys.join(', webhook.')}` : 'webhook must be an object with a url',
            },
          )
          .optional(),
        timeout_s: z
          .number({ error: 'timeout_s must be a number' })
          .int({ error: 'timeout_s must be a whole number of seconds' })
          .min(1, { error: 'timeout_s must be at least 1' })
          .max(MAX_TIMEOUT_S, { error: `timeout_s must be at most ${MAX_TIMEOUT_S}` })
          .optional(),
        ttl_s: z
          .number({ error: 'ttl_s must be a number' })
          .int({ error: 'ttl_s must be a whole number of seconds' })
          .min(1, { error: 'ttl_s must be at least 1' })
          .max(MAX_TIMEOUT_S, { error: `ttl_s must be at most ${MAX_TIMEOUT_S}` })
          .optional(),
        filters: filtersField().optional(),
        prompt_variations: z.boolean({ error: 'prompt_variations must be true or false' }).optional(),
        output_format: z.enum(OUTPUT_FORMATS, { error: `output_format must be one of: ${OUTPUT_FORMATS.join(', ')}` }).optional(),
        output_quality: z
          .number({ error: 'output_quality must be a number' })
          .int({ error: 'output_quality must be a whole number' })
          .min(1, { error: 'output_quality must be at least 1' })
          .max(100, { error: 'output_quality must be at most 100' })
          .optional(),
      },
      { error: (i) => (i.code === 'unrecognized_keys' ? `unknown field: ${i.keys.join(', ')}` : 'the body must be a JSON object') },
    )
    .superRefine((r, ctx) => {
      if (r.img_size !== undefined && (r.width !== undefined || r.height !== undefined)) {
        ctx.addIssue({ code: 'custom', path: ['img_size'], message: 'img_size cannot be combined with width or height' });
      }
      // Image i uses seed + i: the whole range must be a valid seed (numpy's are uint32); no wrap-around.
      const images = r.num_images ?? 1;
      if (r.seed !== undefined && r.seed + images - 1 > MAX_SEED) {
        ctx.addIssue({
          code: 'custom',
          path: ['seed'],
          message: `seed must be at most ${maxSeedFor(images)} with num_images ${images}: image i uses seed + i, and seeds end at ${MAX_SEED}`,
        });
      }
      if (r.output_quality !== undefined && (r.output_format ?? 'png') === 'png') {
        ctx.addIssue({ code: 'custom', path: ['output_quality'], message: 'output_quality applies to webp and jpeg only (png is lossless): set output_format too' });
      }
    });
}

/**
 * `filters`: names of the filters to run on each image (which exist is checked against the served
 * model where the request is parsed). Every problem is reported on the field itself.
 */
function filtersField() {
  return z
    .array(
      z
        .string({ error: 'filters must hold filter names (strings)' })
        .regex(FILTER_NAME_PATTERN, { error: 'filters: a filter name is lowercase letters, digits, _ or - (at most 32), starting with a letter' }),
      { error: `filters must be a list of filter names, e.g. ["${BUILTIN_FILTERS.join('", "')}"]` },
    )
    .max(MAX_FILTERS, { error: `filters may name at most ${MAX_FILTERS} filters` })
    .refine((names) => new Set(names).size === names.length, { error: 'filters must not name a filter twice' })
    .meta({
      description: `Filters to screen each image with; default: the model's (nsfw when the export has a safety checker). Known: ${BUILTIN_FILTERS.join(', ')}, and any a worker registered.`,
    });
}

export type GenerationRequest = z.infer<ReturnType<typeof makeGenerationRequestSchema>>;

/** What the queue carries: every default resolved, so a retry runs exactly the same job. */
export const JobPayloadSchema = z.object({
  prompt: z.string().min(1),
  negativePrompt: z.string(),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  numInferenceSteps: z.number().int().positive(),
  guidanceScale: z.number().min(0),
  seed: z.number().int().min(0).max(MAX_SEED),
  numImages: z.number().int().positive(),
  scheduler: z.string().optional(),
  model: z.string(),
  /** Why the job runs on `model`: `explicit`, `default`, or `trigger word "<word>"` (absent on jobs from before routing). */
  routedBy: z.string().optional(),
  /** The seed was drawn by the service, not given by the client. */
  randomSeed: z.boolean(),
  /** Where to POST this job's events, and which ones. */
  webhook: z.object({ url: z.string(), events: z.array(z.enum(WEBHOOK_EVENTS)) }).optional(),
  /** The client's deadline for the run, in seconds (JOB_MAX_RUN_S applies too). */
  timeoutS: z.number().int().positive().optional(),
  /** How long the job may wait in the queue (seconds), and the time (ms) past which it ends `expired` unrun. */
  ttlS: z.number().int().positive().optional(),
  expiresAt: z.number().int().positive().optional(),
  /** How the worker encodes the images (absent: png, as before the field existed). */
  outputFormat: z.enum(OUTPUT_FORMATS).optional(),
  /** webp and jpeg quality, 1–100. */
  outputQuality: z.number().int().min(1).max(100).optional(),
  /** Id of the API key that made the job: only that key sees, cancels or streams it. */
  owner: z.string().optional(),
  /** Filters the client asked for; absent: the model's defaults (the worker knows them). */
  filters: z.array(z.string()).optional(),
  /** The client asked for prompt variations; `prompts` holds them. */
  promptVariations: z.boolean().optional(),
  /** Image i's prompt (prompt variations); absent: `prompt` for every image. */
  prompts: z.array(z.string()).optional(),
});
export type JobPayload = z.infer<typeof JobPayloadSchema>;

export interface ModelDefaults {
  name: string;
  defaultSize: number;
}

export function toJobPayload(
  request: GenerationRequest,
  limits: RequestLimits,
  model: ModelDefaults,
  /** A random first seed for `numImages` images, at most `maxSeedFor(numImages)`. */
  drawSeed: (numImages: number) => number,
  now = Date.now(),
): JobPayload {
  const size = request.img_size;
  const seed = request.seed ?? drawSeed(request.num_images ?? 1);
  return {
    prompt: request.prompt,
    negativePrompt: request.negative_prompt ?? '',
    width: size ?? request.width ?? model.defaultSize,
    height: size ?? request.height ?? model.defaultSize,
    numInferenceSteps: request.num_inference_steps ?? limits.defaultSteps,
    guidanceScale: request.guidance_scale ?? limits.defaultGuidance,
    seed,
    numImages: request.num_images ?? 1,
    scheduler: request.scheduler,
    model: request.model ?? model.name,
    randomSeed: request.seed === undefined,
    ...(request.webhook
      ? { webhook: { url: request.webhook.url, events: [...new Set(request.webhook.events ?? DEFAULT_WEBHOOK_EVENTS)] } }
      : {}),
    ...(request.timeout_s !== undefined ? { timeoutS: request.timeout_s } : {}),
    ...(request.ttl_s !== undefined ? { ttlS: request.ttl_s, expiresAt: now + request.ttl_s * 1000 } : {}),
    ...(request.filters !== undefined ? { filters: request.filters } : {}),
    ...(request.prompt_variations ? { promptVariations: true } : {}),
    outputFormat: request.output_format ?? 'png',
    ...(request.output_format !== undefined && request.output_format !== 'png'
      ? { outputQuality: request.output_quality ?? DEFAULT_OUTPUT_QUALITY }
      : {}),
  };
}

/**
 * How a field's query-string text is read, by the type the request schema gives the field: a list
 * of strings as comma-separated text (`a,b`; empty: none), other lists and objects not at all.
 */
type QueryKind = 'number' | 'boolean' | 'text' | 'text-list' | 'structured';

const unwrap = (field: z.core.$ZodType): z.core.$ZodType => {
  let inner = field;
  while (inner._zod.def.type === 'optional' || inner._zod.def.type === 'default' || inner._zod.def.type === 'nullable') {
    inner = (inner._zod.def as unknown as { innerType: z.core.$ZodType }).innerType;
  }
  return inner;
};

/** Any object schema's fields (the request schema's, or a test's). */
type ObjectShape = { shape: Readonly<Record<string, unknown>> };

function queryKinds(schema: ObjectShape): Map<string, QueryKind> {
  const kinds = new Map<string, QueryKind>();
  for (const [name, field] of Object.entries(schema.shape)) {
    const inner = unwrap(field as unknown as z.core.$ZodType);
    const type = inner._zod.def.type;
    const element = type === 'array' ? unwrap((inner._zod.def as unknown as { element: z.core.$ZodType }).element)._zod.def.type : undefined;
    kinds.set(
      name,
      type === 'number'
        ? 'number'
        : type === 'boolean'
          ? 'boolean'
          : element === 'string' || element === 'enum'
            ? 'text-list'
            : type === 'object' || type === 'array' || type === 'record'
              ? 'structured'
              : 'text',
    );
  }
  return kinds;
}

/**
 * A query string as a request object, its numbers and booleans read as JSON reads them
 * (`request-values.ts`), so a query string accepts exactly what a JSON body accepts. Problems
 * name the parameter: a prototype-reaching name, a repeated parameter, a number or boolean that is
 * not spelled as JSON spells it, a structured field (that needs POST's JSON body). Unknown names
 * are left for the schema, which refuses them by name too.
 */
export function queryToRequest(
  query: Record<string, unknown>,
  schema: ObjectShape,
): { value: Record<string, unknown>; problems: FieldProblem[] } {
  const kinds = queryKinds(schema);
  const value: Record<string, unknown> = {};
  const problems: FieldProblem[] = [];
  for (const name of Object.keys(query)) {
    const raw = query[name];
    if (FORBIDDEN_KEYS.has(name)) {
      problems.push({ field: name, message: `parameter ${name} is not allowed` });
      continue;
    }
    if (Array.isArray(raw)) {
      problems.push({ field: name, message: `${name} is given more than once` });
      continue;
    }
    const text = String(raw);
    switch (kinds.get(name)) {
      case 'number': {
        const number = parseNumberText(text);
        if (number === null) problems.push({ field: name, message: `${name} must be a number written in decimal (like 512 or 7.5), got ${JSON.stringify(text.slice(0, 40))}` });
        else value[name] = number;
        break;
      }
      case 'boolean': {
        const flag = parseBooleanText(text);
        if (flag === null) problems.push({ field: name, message: `${name} must be true or false, got ${JSON.stringify(text.slice(0, 40))}` });
        else value[name] = flag;
        break;
      }
      case 'text-list':
        value[name] = text.split(',').map((item) => item.trim()).filter((item) => item !== '');
        break;
      case 'structured':
        problems.push({ field: name, message: `${name} cannot be given in a query string; send it in the JSON body of POST /v1/jobs` });
        break;
      default:
        value[name] = text;
    }
  }
  return { value, problems };
}

export interface FieldProblem {
  field: string;
  message: string;
}

/** Turns a zod error into the field-by-field problems the API answers with. */
export function describeIssues(error: z.ZodError): FieldProblem[] {
  return error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return { field: [...issue.path.map(String), issue.keys[0] ?? ''].join('.'), message: issue.message };
    }
    return { field: issue.path.map(String).join('.'), message: issue.message };
  });
}
