import { z } from 'zod';
import type { Config } from '../shared/config.js';
import { makeGenerationRequestSchema } from '../shared/job-schema.js';
import {
  ErrorSchema,
  JobViewSchema,
  LivenessSchema,
  ModelsSchema,
  QueueLoadSchema,
  ReadinessSchema,
  WorkersSchema,
} from './response-schemas.js';
import { routeKey } from './route-table.js';

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
        { name: 'file', in: 'path', required: true, description: '`0.png`, `1.png`, …', schema: { type: 'string', pattern: '^\\d{1,3}\\.png$' } },
      ],
      responses: {
        '200': { description: 'The PNG.', content: { 'image/png': { schema: { type: 'string', contentMediaType: 'image/png' } } } },
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
    method: 'get',
    path: '/v1/jobs/{id}/events',
    build: () => ({
      operationId: 'streamJobEvents',
      tags: ['jobs'],
      summary: 'Server-sent events: progress and the final state',
      description:
        'Events are named by status: `queued` (data: the job, with queue_position), `running` (data: the job, with progress), ' +
        'then one final `succeeded`, `failed` or `canceled` with the job, after which the stream ends.',
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
    build: (_ctx, schemas) => syncOperation('generate', 'Generate one image and answer the PNG', schemas),
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
      summary: 'The served models: state (available, loading, idle, unavailable with the load error and the next try), workers, capabilities',
      responses: { '200': json(ref('Models'), 'The models.'), '503': errorResponse('Redis is unreachable.') },
    }),
  },
  {
    method: 'get',
    path: '/v1/queue',
    build: () => ({
      operationId: 'queueLoad',
      tags: ['operations'],
      summary: "The queue's load: what the autoscaler and KEDA's metrics-api scaler read",
      responses: { '200': json(ref('QueueLoad'), 'The load.'), '503': errorResponse('Redis is unreachable.') },
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
    }));
  return {
    operationId,
    tags: ['synchronous'],
    summary,
    description: 'Queues the job and waits up to SYNC_TIMEOUT_S for it. On timeout it answers 202 with the job and its Location to poll; the job keeps running.',
    parameters,
    responses: {
      '200': {
        description: 'The PNG.',
        headers: {
          'X-Job-Id': { description: 'The job id.', schema: { type: 'string' } },
          'X-Seed': { description: 'The seed used.', schema: { type: 'string' } },
        },
        content: { 'image/png': { schema: { type: 'string', contentMediaType: 'image/png' } } },
      },
      '202': { ...json(ref('Job'), 'Still running after SYNC_TIMEOUT_S; poll the Location.'), headers: { Location: { schema: { type: 'string' } } } },
      '400': errorResponse('Bad input; `field` names it.'),
      '409': json({ type: 'object' }, 'The job was canceled.'),
      '500': json({ type: 'object' }, 'The job failed; `error` says why and `job` is the job.'),
      '503': errorResponse('The queue (Redis) is unreachable; retry.'),
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
  if (properties.model) properties.model.examples = [config.model.name];
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
    }
    (paths[op.path] ??= {})[op.method] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'sd-jobs',
      version,
      description:
        `Stable Diffusion image generation as a job service. Serving model \`${ctx.config.model.name}\`. ` +
        'Submit with POST /v1/jobs and poll, stream /v1/jobs/{id}/events, or call GET /v1/generate for the PNG itself.',
    },
    ...(ctx.config.publicUrl ? { servers: [{ url: ctx.config.publicUrl }] } : {}),
    tags: [
      { name: 'jobs', description: 'Asynchronous jobs' },
      { name: 'synchronous', description: 'Wait for the image in one request' },
      { name: 'operations', description: 'Health, metrics, workers' },
    ],
    paths,
    components: {
      schemas: {
        GenerationRequest: schemas.request,
        Job: toJson(JobViewSchema),
        Error: toJson(ErrorSchema),
        Liveness: toJson(LivenessSchema),
        Readiness: toJson(ReadinessSchema),
        Workers: toJson(WorkersSchema),
        Models: toJson(ModelsSchema),
        QueueLoad: toJson(QueueLoadSchema),
      },
      ...(keysRequired ? { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'Authorization: Bearer <your API key>' } } } : {}),
    },
  };
}

/** The documented operations as `METHOD /path` keys, for tests. */
export const DOCUMENTED_OPERATIONS: readonly string[] = OPERATIONS.map((op) => routeKey(op.method, op.path));
