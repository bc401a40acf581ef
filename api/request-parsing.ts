import { randomInt } from 'node:crypto';
import type { Request } from 'express';
import {
  describeIssues,
  makeGenerationRequestSchema,
  MAX_SEED,
  toJobPayload,
  type JobPayload,
} from '../shared/job-schema.js';
import { AddressPolicy } from '../shared/webhooks/address-policy.js';
import { HttpError, invalidRequest } from './http-errors.js';
import type { AppDeps } from './deps.js';
import { refuseUnavailableModel } from './models.js';

export const drawSeed = () => randomInt(0, MAX_SEED);

type GenerationRequestSchema = ReturnType<typeof makeGenerationRequestSchema>;

// Built once per configuration, not per request.
const schemas = new WeakMap<object, GenerationRequestSchema>();
function requestSchema(deps: AppDeps): GenerationRequestSchema {
  let schema = schemas.get(deps.config);
  if (!schema) {
    schema = makeGenerationRequestSchema(deps.config.limits);
    schemas.set(deps.config, schema);
  }
  return schema;
}

const policies = new WeakMap<object, AddressPolicy>();
function webhookPolicy(deps: AppDeps): AddressPolicy {
  let policy = policies.get(deps.config);
  if (!policy) {
    policy = new AddressPolicy(deps.config.webhooks.allow);
    policies.set(deps.config, policy);
  }
  return policy;
}

/** Who submits the job and on which base URL: stored with it for ownership checks and webhook links. */
export interface SubmissionContext {
  owner?: string | undefined;
  origin?: string | undefined;
}

/** Validates a generation request against the schema and the served model; 400s name the field. */
export async function parseGenerationRequest(
  deps: AppDeps,
  input: unknown,
  where: 'body' | 'query',
  context: SubmissionContext = {},
): Promise<JobPayload> {
  if (where === 'body' && (input === undefined || input === null || typeof input !== 'object' || Array.isArray(input))) {
    throw new HttpError(400, 'invalid_request', 'The body must be a JSON object with at least a prompt.', 'body');
  }
  const parsed = requestSchema(deps).safeParse(input);
  if (!parsed.success) throw invalidRequest(describeIssues(parsed.error));

  const served = deps.config.model.name;
  if (parsed.data.model !== undefined && parsed.data.model !== served) {
    throw invalidRequest([{ field: 'model', message: `unknown model ${JSON.stringify(parsed.data.model)}; this service serves ${JSON.stringify(served)}` }]);
  }
  const model = await deps.models.get(served);
  const payload = toJobPayload(parsed.data, deps.config.limits, { name: served, defaultSize: model?.defaultSize ?? 512 }, deps.drawSeed ?? drawSeed);

  if (model) {
    const problems = [];
    for (const field of ['width', 'height'] as const) {
      const value = payload[field];
      const named = parsed.data.img_size !== undefined ? 'img_size' : field;
      const fixed = model.fixedSize?.[field];
      if (fixed !== undefined && value !== fixed) {
        problems.push({ field: named, message: `${named} must be ${fixed}: this model's export has a fixed ${field}` });
      } else if (value % model.sizeMultiple !== 0 || value < model.minSize || value > model.maxSize) {
        problems.push({
          field: named,
          message: `${named} must be a multiple of ${model.sizeMultiple} between ${model.minSize} and ${model.maxSize} for this model`,
        });
      }
    }
    if (problems.length > 0) throw invalidRequest(problems.slice(0, parsed.data.img_size !== undefined ? 1 : 2));
  }
  if (payload.webhook) {
    if (deps.config.webhooks.secrets.length === 0) {
      throw invalidRequest([{ field: 'webhook', message: 'webhook is not available: this service has no WEBHOOK_SECRETS to sign deliveries with' }]);
    }
    // Literal addresses are refused here; names are checked again where it counts, at connect time.
    const problem = webhookPolicy(deps).checkUrl(payload.webhook.url);
    if (problem) throw invalidRequest([{ field: 'webhook.url', message: `webhook.url ${problem}` }]);
  }
  await refuseUnavailableModel(deps, served);
  if (context.owner !== undefined) payload.owner = context.owner;
  if (context.origin !== undefined) payload.origin = context.origin;
  return payload;
}

/** Absolute base URL for links: the configured public URL, else the one this request came in on. */
export function baseUrlOf(deps: AppDeps, req: Request): string {
  return deps.config.publicUrl ?? `${req.protocol}://${req.get('host') ?? `localhost:${deps.config.port}`}`;
}
