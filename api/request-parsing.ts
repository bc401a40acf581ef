import { randomInt } from 'node:crypto';
import type { Request } from 'express';
import {
  describeIssues,
  makeGenerationRequestSchema,
  maxSeedFor,
  queryToRequest,
  SCHEDULER_CLASS,
  toJobPayload,
  type JobPayload,
} from '../shared/job-schema.js';
import { modelProblems } from '../shared/model-capabilities.js';
import { routeModel } from '../shared/model-catalogue.js';
import { forbiddenKeyPath } from '../shared/request-values.js';
import { BUILTIN_FILTERS } from '../shared/filters.js';
import { promptVariants } from '../shared/prompt-variations.js';
import { AddressPolicy } from '../shared/webhooks/address-policy.js';
import { HttpError, invalidRequest } from './http-errors.js';
import type { AppDeps } from './deps.js';
import { refuseUnavailableModel } from './models.js';

/** A random first seed such that every image's seed (seed + i) is a valid one. */
export const drawSeed = (numImages: number) => randomInt(0, maxSeedFor(numImages) + 1);

type GenerationRequestSchema = ReturnType<typeof makeGenerationRequestSchema>;

/** What validating a request needs: the configuration and the served models. */
export type ParsingDeps = Pick<AppDeps, 'config' | 'models' | 'drawSeed' | 'publishedModels' | 'modelStates'>;

// Built once per configuration, not per request.
const schemas = new WeakMap<object, GenerationRequestSchema>();
function requestSchema(deps: ParsingDeps): GenerationRequestSchema {
  let schema = schemas.get(deps.config);
  if (!schema) {
    schema = makeGenerationRequestSchema(deps.config.limits);
    schemas.set(deps.config, schema);
  }
  return schema;
}

const policies = new WeakMap<object, AddressPolicy>();
function webhookPolicy(deps: ParsingDeps): AddressPolicy {
  let policy = policies.get(deps.config);
  if (!policy) {
    policy = new AddressPolicy(deps.config.webhooks.allow);
    policies.set(deps.config, policy);
  }
  return policy;
}

/** Who submits the job: stored with it for ownership checks (nothing from the request's Host is). */
export interface SubmissionContext {
  owner?: string | undefined;
}

/** Validates a generation request against the schema and the served model; 400s name the field. */
export async function parseGenerationRequest(
  deps: ParsingDeps,
  input: unknown,
  where: 'body' | 'query',
  context: SubmissionContext = {},
): Promise<JobPayload> {
  const schema = requestSchema(deps);
  let request: unknown = input;
  if (where === 'body') {
    if (input === undefined || input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw new HttpError(400, 'invalid_request', 'The body must be a JSON object with at least a prompt.', 'body');
    }
    const forbidden = forbiddenKeyPath(input);
    if (forbidden !== null) throw invalidRequest([{ field: forbidden, message: `field ${forbidden} is not allowed` }]);
  } else {
    const { value, problems } = queryToRequest(input as Record<string, unknown>, schema);
    if (problems.length > 0) throw invalidRequest(problems);
    request = value;
  }
  const parsed = schema.safeParse(request);
  // A problem with one entry of `filters` is a problem with the field.
  if (!parsed.success) throw invalidRequest(describeIssues(parsed.error).map((p) => (p.field.startsWith('filters.') ? { ...p, field: 'filters' } : p)));

  // The model: named, or `auto` (absent) routed by the prompt's trigger words (shared/model-catalogue.ts).
  const route = routeModel(deps.config.models, parsed.data.model, parsed.data.prompt);
  if (!route.ok) throw invalidRequest([{ field: 'model', message: route.message }]);
  const served = route.model.name;
  const model = deps.models.get(served);
  if (!model) throw new HttpError(503, 'model_unavailable', `The model ${served} is not available.`, 'model');
  const payload = toJobPayload({ ...parsed.data, model: served }, deps.config.limits, { name: served, defaultSize: model.defaultSize }, deps.drawSeed ?? drawSeed);
  payload.routedBy = route.routedBy;
  // What the export itself can take: the worker's pipeline checks the same again.
  const problems = modelProblems(
    model,
    {
      width: payload.width,
      height: payload.height,
      numInferenceSteps: payload.numInferenceSteps,
      schedulerClass: parsed.data.scheduler === undefined ? undefined : SCHEDULER_CLASS[parsed.data.scheduler],
    },
    (side) => (parsed.data.img_size !== undefined ? 'img_size' : side),
  );
  if (problems.length > 0) throw invalidRequest(problems);
  if (payload.filters) {
    // The export's own (nsfw with a safety checker, grayscale), and those its workers published: an
    // operator's filter modules are code only a worker loads. The worker checks again.
    let known: readonly string[] = model.filters.available;
    if (payload.filters.some((name) => !known.includes(name))) {
      const published = (await deps.publishedModels?.get(served))?.filters?.available ?? [];
      known = [...new Set([...known, ...published])];
    }
    const unknown = payload.filters.find((name) => !known.includes(name));
    if (unknown !== undefined) {
      const why = unknown === 'nsfw' ? 'this model has no safety checker' : `this model's filters are: ${known.join(', ') || 'none'}`;
      throw invalidRequest([{ field: 'filters', message: `unknown filter ${JSON.stringify(unknown)}: ${why}` }]);
    }
  }
  if (payload.promptVariations) {
    payload.prompts = promptVariants(payload.prompt, payload.seed, payload.numImages, deps.config.promptModifiers);
  }
  if (payload.webhook) {
    // With API keys each key signs with its own secrets; the open service needs the operator's.
    if (context.owner === undefined && deps.config.webhooks.secrets.length === 0) {
      throw invalidRequest([{ field: 'webhook', message: 'webhook is not available: this service has no WEBHOOK_SECRETS to sign deliveries with' }]);
    }
    // Literal addresses are refused here; names are checked again where it counts, at connect time.
    const problem = webhookPolicy(deps).checkUrl(payload.webhook.url);
    if (problem) throw invalidRequest([{ field: 'webhook.url', message: `webhook.url ${problem}` }]);
  }
  await refuseUnavailableModel(deps, served);
  if (context.owner !== undefined) payload.owner = context.owner;
  return payload;
}

/** A host[:port] as a proxy may forward it; anything else is not used for links. */
const HOST_PORT = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * The base of the links in an answer: PUBLIC_URL when set; else, behind a proxy TRUST_PROXY
 * trusts, the scheme and host it forwarded (X-Forwarded-Proto, X-Forwarded-Host); else '' —
 * links relative to the API, never built from the Host header a client chose.
 */
export function baseUrlOf(deps: Pick<AppDeps, 'config'>, req: Request): string {
  if (deps.config.publicUrl) return deps.config.publicUrl;
  if (deps.config.trustProxy === false) return '';
  const trusted = req.app.get('trust proxy fn') as (address: string | undefined, hop: number) => boolean;
  if (!trusted(req.socket.remoteAddress, 0)) return '';
  // Express's own reading: the first of a comma-separated list.
  const host = req.get('x-forwarded-host')?.split(',')[0]?.trim();
  const protocol = req.protocol;
  if (!host || !HOST_PORT.test(host) || (protocol !== 'http' && protocol !== 'https')) return '';
  return `${protocol}://${host}`;
}
