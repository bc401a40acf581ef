import { z } from 'zod';
import type { Config } from '../shared/config.js';
import { makeGenerationRequestSchema } from '../shared/job-schema.js';
import { OUTPUT_MEDIA } from '../shared/output-format.js';
import {
  ErrorSchema,
  JobListSchema,
  JobViewSchema,
  LivenessSchema,
  ModelsSchema,
  QueueLoadSchema,
  ReadinessSchema,
  SyncFailureSchema,
  WebhookSecretsSchema,
  WorkersSchema,
} from './response-schemas.js';
import { routeKey } from './route-table.js';
import { MAX_OVERLAP_S } from '../shared/webhooks/tenant-secrets.js';
import { WEBHOOK_EVENTS } from '../shared/webhooks/events.js';
import { DEFAULT_PAGE, MAX_PAGE } from './job-listing.js';

/**
 * The OpenAPI 3.1 document of this API. Request bodies and query parameters come from the very
 * zod schema the handlers validate with (`makeGenerationRequestSchema(limits)`), so the limits in
 * the document are this deployment's. Each operation below is listed only when its route is
 * mounted: add an entry here when you add a route (test/openapi.test.ts names any you missed).
 */

type Json = Record<string, unknown>;

export interface OpenApiContext {
  config: Readonly<Config>;
  /** `METHOD /openapi/{path}` keys of the routes the app serves (see route-table.ts). */
  mounted: ReadonlySet<string>;
}

interface Operation {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  path: string;
  build(ctx: OpenApiContext, schemas: Schemas): Json;
}

interface Schemas {
  request: Json;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Json, description: string) => ({ description, content: { 'application/json': { schema } } });
const errorResponse = (description: string) => json(ref('Error'), description);
/** An image answer: one media type per output format. */
const imageContent = Object.fromEntries(
  Object.values(OUTPUT_MEDIA).map(({ contentType }) => [contentType, { schema: { type: 'string', contentMediaType: contentType } }]),
);
const jobId = { name: 'id', in: 'path', required: true, description: 'The job id from POST /v1/jobs.', schema: { type: 'string', pattern: '^[A-Za-z0-9-]{1,64}$' } };

/** What the generated request schema cannot say by itself; applied to fields that exist. */
const FIELD_DESCRIPTIONS: Record<string, string> = {
  prompt: 'What to draw.',
  negative_prompt: 'What to steer away from; also the unconditional side of classifier-free guidance.',
  width: "Image width in pixels; default: the model's size.",
  height: "Image height in pixels; default: the model's size.",
  img_size: 'Sets width and height at once (the tutorial client sends it); not together with them.',
  num_inference_steps: 'Denoising steps.',
  guidance_scale: 'Classifier-free guidance strength; 1 or less turns guidance off.',
  seed: 'Same seed, same request → same image. Image i of a job uses seed + i. Default: drawn at random and returned.',
  num_images: 'Images in this job (1 on the synchronous routes).',
  scheduler: "Sampler: a short alias or a diffusers class name; default: the model's.",
  model: 'The served model (the only accepted value).',
  webhook: 'Where to POST the job when it ends, signed per Standard Webhooks.',
  timeout_s: 'Give up on the job (it fails with code timeout) when it has not finished this many seconds after it started.',
  ttl_s: 'Give up on the job if it is still queued this many seconds after submission: it ends with status `expired` and never runs.',
  prompt_variations: 'Give each image its own variant of the prompt: the prompt as written plus a style, lighting, lens and composition modifier, chosen from the seed.',
  output_format: 'How the images are encoded: png (lossless, the default), webp or jpeg. The image URLs end in .png, .webp or .jpg.',
  output_quality: 'Quality of webp and jpeg images, 1–100 (default 80); not with png, which is lossless.',
};

const OPERATIONS: Operation[] = [
  {
    method: 'post',
    path: '/v1/jobs',
    build: () => ({
      operationId: 'createJob',
      tags: ['jobs'],
      summary: 'Submit a generation job',
      description: 'Validates, queues and answers at once with the job; poll it, stream its events, or wait for its webhook.',
      parameters: [
        {
          name: 'Idempotency-Key',
          in: 'header',
          required: false,
          description: 'A retried POST with the same key returns the same job (with `Idempotent-Replayed: true`).',
          schema: { type: 'string', maxLength: 255 },
        },
        {
          name: 'Prefer',
          in: 'header',
          required: false,
          description: '`wait=N`: hold the answer until the job ends or N seconds pass (at most SYNC_TIMEOUT_S).',
          schema: { type: 'string', examples: ['wait=30'] },
        },
      ],
      requestBody: { required: true, content: { 'application/json': { schema: ref('GenerationRequest') } } },
      responses: {
        '200': json(ref('Job'), 'An Idempotency-Key replay of a job that has finished (with Prefer: wait).'),
        '201': json(ref('Job'), 'With Prefer: wait, the job finished within the wait.'),
        '202': {
          ...json(ref('Job'), 'Queued (or, with Prefer: wait, still running when the wait ran out).'),
          headers: { Location: { description: 'The job URL.', schema: { type: 'string', format: 'uri' } } },
        },
        '400': errorResponse('Bad input; `field` names the first bad field.'),
        '413': errorResponse('Body too large.'),
        '415': errorResponse('Body is not JSON.'),
        '503': errorResponse('The queue (Redis) is unreachable; retry.'),
      },
    }),
  },
  {
    method: 'get',
    path: '/v1/jobs',
    build: () => ({
      operationId: 'listJobs',
      tags: ['jobs'],
      summary: "The caller's jobs, newest first (its API key's; every job when the service runs without keys)",
      parameters: [
        {
          name: 'status',
          in: 'query',
          required: false,
          description: 'Comma-separated statuses to keep, e.g. `queued,running`.',
          schema: { type: 'string', examples: ['queued,running'] },
        },
        { name: 'limit', in: 'query', required: false, description: 'Jobs per page.', schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE } },
        { name: 'cursor', in: 'query', required: false, description: 'The `next_cursor` of the previous page.', schema: { type: 'string' } },
      ],
      responses: {
        '200': json(ref('JobList'), 'A page of jobs; a status filter may give fewer than `limit` with a cursor to go on.'),
        '400': errorResponse('A bad status, limit or cursor, or an unknown parameter; `field` names it.'),
        '503': errorResponse('The queue (Redis) is unreachable; retry.'),
      },
    }),
  },
  {
    method: 'get',
    path: '/v1/jobs/{id}',
    build: () => ({
      operationId: 'getJob',
      tags: ['jobs'],
      summary: 'A job: status, progress, queue position, outputs, error',
      parameters: [jobId],
      responses: { '200': json(ref('Job'), 'The job.'), '404': errorResponse('No such job (or expired).') },
    }),
  },
  {
    method: 'get',
    path: '/v1/jobs/{id}/images/{file}',
    build: () => ({
      operationId: 'getJobImage',
      tags: ['jobs'],
      summary: "One of a succeeded job's images",
      parameters: [
        jobId,
        {
          name: 'file',
          in: 'path',
          required: true,
          description: "`0.png`, `1.png`, … (`.webp`, `.jpg` for the job's output_format): as in `outputs.images[].url`",
          schema: { type: 'string', pattern: '^\\d{1,3}\\.(png|webp|jpg)$' },
        },
      ],
      responses: {
        '200': { description: "The image, in the job's output format.", content: imageContent },
        '302': { description: 'Redirect to a presigned storage URL (when S3_PRESIGN_URLS is on).' },
        '404': errorResponse('No such job or image, or the job has not succeeded.'),
      },
    }),
  },
  {
    method: 'post',
    path: '/v1/jobs/{id}/cancel',
    build: () => ({
      operationId: 'cancelJob',
      tags: ['jobs'],
      summary: 'Cancel a job',
      description: 'A queued job never runs; a running job stops between denoising steps and frees the GPU.',
      parameters: [jobId],
      responses: {
        '200': json(ref('Job'), 'The job, canceled or about to be.'),
        '202': json(ref('Job'), 'Cancellation requested; the job stops at its next step.'),
        '404': errorResponse('No such job.'),
        '409': errorResponse('The job has already finished.'),
      },
    }),
  },
  {
    method: 'post',
    path: '/v1/jobs/{id}/webhooks/redeliver',
    build: () => ({
      operationId: 'redeliverWebhook',
      tags: ['webhooks'],
      summary: 'Send again a webhook event whose delivery gave up (exhausted, gone or refused)',
      description:
        'A new round of the retry schedule with the same `webhook-id` (and, while the message is stored, the same body). ' +
        'Without a body every delivery of the job that gave up is sent again; `{"event": "completed"}` picks one. Each attempt shows in `webhook.deliveries[].history`.',
      parameters: [jobId],
      requestBody: {
        required: false,
        content: { 'application/json': { schema: { type: 'object', additionalProperties: false, properties: { event: { type: 'string', enum: [...WEBHOOK_EVENTS] } } } } },
      },
      responses: {
        '202': json(ref('Job'), 'Sending again; the deliveries are pending.'),
        '400': errorResponse('A bad body; `field` names it.'),
        '404': errorResponse('No such job, or no such delivery (`delivery_not_found`).'),
        '409': errorResponse('The job has no webhook (`no_webhook`), or its deliveries did not give up (`delivery_not_failed`).'),
        '503': errorResponse('The queue (Redis) is unreachable; retry.'),
      },
    }),
  },
  {
    method: 'get',
    path: '/v1/jobs/{id}/events',
    build: () => ({
      operationId: 'streamJobEvents',
      tags: ['jobs'],
      summary: 'Server-sent events: progress and the final state',
      description:
        'Events are named by status: `queued` (data: the job, with queue_position), `running` (data: the job, with progress), ' +
        'then one final `succeeded`, `failed`, `canceled` or `expired` with the job, after which the stream ends.',
      parameters: [jobId],
      responses: {
        '200': { description: 'An event stream; each `data:` line is a Job.', content: { 'text/event-stream': { schema: { type: 'string' } } } },
        '404': errorResponse('No such job.'),
      },
    }),
  },
  {
    method: 'get',
    path: '/v1/generate',
    build: (_ctx, schemas) => syncOperation('generate', 'Generate one image and answer it (PNG unless output_format says otherwise)', schemas),
  },
  {
    method: 'get',
    path: '/dreambooth',
    build: (_ctx, schemas) => syncOperation('dreambooth', 'The tutorial client’s route: same as GET /v1/generate', schemas),
  },
  {
    method: 'get',
    path: '/v1/workers',
    build: () => ({
      operationId: 'listWorkers',
      tags: ['operations'],
      summary: "Workers (slot, state, current job) from their heartbeats, and the autoscaler's view",
      responses: { '200': json(ref('Workers'), 'The workers.'), '503': errorResponse('Redis is unreachable.') },
    }),
  },
  {
    method: 'get',
    path: '/v1/models',
    build: () => ({
      operationId: 'listModels',
      tags: ['operations'],
      summary: 'The served models: default, trigger words, state (available, loading, idle, unavailable with the load error and the next try), workers by state, load, capabilities',
      responses: { '200': json(ref('Models'), 'The models.'), '503': errorResponse('Redis is unreachable.') },
    }),
  },
  {
    method: 'get',
    path: '/v1/queue',
    build: () => ({
      operationId: 'queueLoad',
      tags: ['operations'],
      summary: "The queues' load: what the autoscaler and KEDA's metrics-api scaler read (one model's with ?model=)",
      parameters: [
        { name: 'model', in: 'query', required: false, description: "A served model's name: that model's load alone (each model's KEDA ScaledObject reads its own).", schema: { type: 'string' } },
      ],
      responses: { '200': json(ref('QueueLoad'), 'The load.'), '400': errorResponse('`model` names no served model.'), '503': errorResponse('Redis is unreachable.') },
    }),
  },
  {
    method: 'get',
    path: '/v1/webhook-secrets',
    build: () => ({
      operationId: 'listWebhookSecrets',
      tags: ['webhooks'],
      summary: "This API key's webhook signing secrets (the first is made on first use)",
      description:
        'Every webhook of a job made with this key is signed (Standard Webhooks) with each live secret here, one signature per secret. ' +
        'Only this key sees them. Without API_KEYS the service signs with its WEBHOOK_SECRETS and this answers 409.',
      responses: {
        '200': json(ref('WebhookSecrets'), 'The live secrets, newest first.'),
        '409': errorResponse('The service runs without API keys (`api_keys_required`).'),
        '503': errorResponse('Redis is unreachable.'),
      },
    }),
  },
  {
    method: 'post',
    path: '/v1/webhook-secrets/rotate',
    build: () => ({
      operationId: 'rotateWebhookSecret',
      tags: ['webhooks'],
      summary: 'Add a new signing secret; the others stay valid `overlap_s` longer (default 86400), then end',
      requestBody: {
        required: false,
        content: {
          'application/json': {
            schema: {
              type: 'object',
              additionalProperties: false,
              properties: { overlap_s: { type: 'integer', minimum: 0, maximum: MAX_OVERLAP_S, default: 86400, description: 'Seconds the current secrets keep signing (0: they end now).' } },
            },
          },
        },
      },
      responses: {
        '201': json(ref('WebhookSecrets'), 'The live secrets, the new one first; at most five live at once.'),
        '400': errorResponse('Bad `overlap_s` or an unknown field.'),
        '409': errorResponse('The service runs without API keys (`api_keys_required`).'),
        '503': errorResponse('Redis is unreachable.'),
      },
    }),
  },
  {
    method: 'get',
    path: '/healthz',
    build: () => ({
      operationId: 'liveness',
      tags: ['operations'],
      summary: 'Liveness: the process answers',
      responses: { '200': json(ref('Liveness'), 'Alive.') },
    }),
  },
  {
    method: 'get',
    path: '/readyz',
    build: () => ({
      operationId: 'readiness',
      tags: ['operations'],
      summary: 'Readiness: Redis and image storage answer (storage takes a write), and the model can be served',
      responses: { '200': json(ref('Readiness'), 'Ready.'), '503': json(ref('Readiness'), 'A dependency is down; `checks` says which.') },
    }),
  },
  {
    method: 'get',
    path: '/metrics',
    build: () => ({
      operationId: 'metrics',
      tags: ['operations'],
      summary: 'Prometheus metrics',
      responses: { '200': { description: 'Prometheus text exposition format.', content: { 'text/plain': { schema: { type: 'string' } } } } },
    }),
  },
  {
    method: 'get',
    path: '/openapi.json',
    build: () => ({
      operationId: 'openapi',
      tags: ['operations'],
      summary: 'This document',
      responses: { '200': json({ type: 'object' }, 'The OpenAPI 3.1 document.') },
    }),
  },
];

function syncOperation(operationId: string, summary: string, schemas: Schemas): Json {
  const properties = (schemas.request.properties ?? {}) as Record<string, Json>;
  const required = new Set((schemas.request.required ?? []) as string[]);
  const parameters = Object.entries(properties)
    // Query strings carry flat values only; nested fields (a webhook) need POST /v1/jobs.
    .filter(([, schema]) => schema.type !== 'object')
    .map(([name, schema]) => ({
      name,
      in: 'query',
      required: required.has(name),
      ...(typeof schema.description === 'string' ? { description: schema.description } : {}),
      schema: name === 'num_images' ? { ...schema, maximum: 1 } : schema,
      // Lists go comma-separated: filters=nsfw,grayscale
      ...(schema.type === 'array' ? { style: 'form', explode: false } : {}),
    }));
  return {
    operationId,
    tags: ['synchronous'],
    summary,
    description: 'Queues the job and waits up to SYNC_TIMEOUT_S for it. On timeout it answers 202 with the job and its Location to poll; the job keeps running.',
    parameters,
    responses: {
      '200': {
        description: 'The image (PNG unless output_format says otherwise).',
        headers: {
          'X-Job-Id': { description: 'The job id.', schema: { type: 'string' } },
          'Content-Location': { description: 'The job: `/v1/jobs/<id>` (its model, routed_by, timings).', schema: { type: 'string' } },
          'X-Model': { description: 'The model that made the image.', schema: { type: 'string' } },
          'X-Seed': { description: 'The seed used.', schema: { type: 'string' } },
          'X-Nsfw-Content-Detected': { description: "The safety checker's verdict, when the nsfw filter ran.", schema: { type: 'string', enum: ['true', 'false'] } },
          'X-Image-Blocked': { description: 'true: every try was screened out and the PNG is black.', schema: { type: 'string', enum: ['true', 'false'] } },
        },
        content: imageContent,
      },
      '202': { ...json(ref('Job'), 'Still running after SYNC_TIMEOUT_S; poll the Location.'), headers: { Location: { schema: { type: 'string' } } } },
      '400': errorResponse('Bad input; `field` names it. Nothing was queued.'),
      '409': json(ref('SyncFailure'), 'The job was canceled.'),
      '422': json(ref('SyncFailure'), 'The worker refused the job as bad input (`error.code` invalid_request).'),
      '500': json(ref('SyncFailure'), 'The job failed on our side (`internal_error`).'),
      '503': json({ anyOf: [ref('SyncFailure'), ref('Error')] }, 'The queue (Redis) is unreachable, or the job failed for storage or a model that is unavailable; retry after Retry-After.'),
      '504': json(ref('SyncFailure'), 'The job ran past its timeout_s (`timeout`), or stayed queued past its ttl_s (`expired`).'),
    },
  };
}

const toJson = (schema: z.ZodType, io: 'input' | 'output' = 'output'): Json => {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Json;
  return rest;
};

/** The generation request as the API validates it, with each field described. */
export function generationRequestJsonSchema(config: Readonly<Config>): Json {
  const schema = toJson(makeGenerationRequestSchema(config.limits), 'input');
  const properties = (schema.properties ?? {}) as Record<string, Json>;
  for (const [name, property] of Object.entries(properties)) {
    const description = FIELD_DESCRIPTIONS[name];
    if (description && property.description === undefined) property.description = description;
  }
  if (properties.model) {
    properties.model.examples = ['auto', ...config.models.map((m) => m.name)];
    properties.model.default = 'auto';
  }
  if (properties.num_inference_steps) properties.num_inference_steps.default = config.limits.defaultSteps;
  if (properties.guidance_scale) properties.guidance_scale.default = config.limits.defaultGuidance;
  if (properties.num_images) properties.num_images.default = 1;
  if (properties.negative_prompt) properties.negative_prompt.default = '';
  return { ...schema, examples: [{ prompt: 'photo of sks dog on the beach', img_size: 512, seed: 42, num_inference_steps: 25 }] };
}

export function buildOpenApiDocument(ctx: OpenApiContext, version: string): Json {
  const schemas: Schemas = { request: generationRequestJsonSchema(ctx.config) };
  const paths: Record<string, Record<string, Json>> = {};
  // With API_KEYS set, the /v1 routes and /dreambooth need a key (api/auth.ts); the rest stay open.
  const keysRequired = (ctx.config.auth?.apiKeyHashes.length ?? 0) > 0;
  for (const op of OPERATIONS) {
    if (!ctx.mounted.has(routeKey(op.method, op.path))) continue;
    const operation = op.build(ctx, schemas);
    if (keysRequired && /^\/(v1\/|dreambooth$)/.test(op.path)) {
      operation.security = [{ apiKey: [] }];
      (operation.responses as Json)['401'] = errorResponse('No API key, or not a valid one.');
      (operation.responses as Json)['429'] = {
        ...errorResponse(
          '`rate_limited`: this key made more requests (RATE_LIMIT_REQUESTS_PER_MIN) or submissions (RATE_LIMIT_SUBMISSIONS_PER_MIN) than a minute allows; ' +
            '`queued_jobs_limit`: it has MAX_QUEUED_JOBS_PER_KEY jobs queued or running.',
        ),
        headers: { 'Retry-After': { description: 'Seconds until the rate limit lets this key in again (rate_limited).', schema: { type: 'integer' } } },
      };
    }
    (paths[op.path] ??= {})[op.method] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'sd-jobs',
      version,
      description:
        `Stable Diffusion image generation as a job service. Serving ${ctx.config.models.map((m) => `\`${m.name}\`${m.isDefault ? ' (default)' : ''}${m.triggerWords.length > 0 ? ` (trigger words: ${m.triggerWords.join(', ')})` : ''}`).join(', ')}; ` +
        'a request\'s `model` names one, or is `auto` (the default): the model whose trigger word the prompt holds, else the default (GET /v1/models). ' +
        'Submit with POST /v1/jobs and poll, stream /v1/jobs/{id}/events, or call GET /v1/generate for the PNG itself.',
    },
    ...(ctx.config.publicUrl ? { servers: [{ url: ctx.config.publicUrl }] } : {}),
    tags: [
      { name: 'jobs', description: 'Asynchronous jobs' },
      { name: 'synchronous', description: 'Wait for the image in one request' },
      { name: 'webhooks', description: "An API key's own webhook signing secrets" },
      { name: 'operations', description: 'Health, metrics, workers' },
    ],
    paths,
    components: {
      schemas: {
        GenerationRequest: schemas.request,
        Job: toJson(JobViewSchema),
        Error: toJson(ErrorSchema),
        SyncFailure: toJson(SyncFailureSchema),
        Liveness: toJson(LivenessSchema),
        Readiness: toJson(ReadinessSchema),
        Workers: toJson(WorkersSchema),
        Models: toJson(ModelsSchema),
        QueueLoad: toJson(QueueLoadSchema),
        WebhookSecrets: toJson(WebhookSecretsSchema),
        JobList: toJson(JobListSchema),
      },
      ...(keysRequired ? { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <your API key>' } } } : {}),
    },
  };
}

/** The documented operations as `METHOD /path` keys, for tests. */
export const DOCUMENTED_OPERATIONS: readonly string[] = OPERATIONS.map((op) => routeKey(op.method, op.path));
