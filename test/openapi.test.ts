import fs from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createApp } from '../api/app.js';
import { createMetrics } from '../api/metrics.js';
import { buildOpenApiDocument, DOCUMENTED_OPERATIONS, generationRequestJsonSchema } from '../api/openapi.js';
import { JobViewSchema } from '../api/response-schemas.js';
import { listRoutes, routeKey, toOpenApiPath } from '../api/route-table.js';
import { loadConfig } from '../shared/config.js';
import type { JobQueue } from '../shared/job-queue.js';
import { createRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import type { QueueMonitor } from '../shared/queue-monitor.js';
import type { ImageStore } from '../shared/storage/index.js';
import { pollJob, silentLogger, startStack, type TestStack } from './helpers/stack.js';

/**
 * GET /openapi.json: a valid OpenAPI 3.1 document whose request schema is the one the API
 * validates with, whose every path the app answers, and which documents every API route the app
 * mounts (a route added without its entry in api/openapi.ts fails here).
 */

type Json = Record<string, any>;

let stack: TestStack;
let dir: string;
let base: string;
let doc: Json;

/** Pages for people, not API operations. */
const PAGES = new Set(['GET /', 'GET /docs']);

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-openapi-'));
  stack = await startStack({
    MODEL_DIR: inject('tinyModelDir'),
    STORAGE_LOCAL_DIR: dir,
    MAX_STEPS: '77',
    MAX_NUM_IMAGES: '3',
    DEFAULT_STEPS: '2',
    ADMIN_USER: 'ops',
    ADMIN_PASSWORD: 'pw',
    WEBHOOK_SECRETS: `whsec_${randomBytes(32).toString('base64')}`,
    WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
  });
  base = stack.api.url;
  const res = await fetch(`${base}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/application\/json/);
  doc = (await res.json()) as Json;
});
afterAll(async () => {
  await stack?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe('the document', () => {
  it('is valid OpenAPI 3.1', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
  });

  it("takes the request schema from the API's own zod schema, with this deployment's limits", () => {
    const request = doc.components.schemas.GenerationRequest;
    expect(request).toEqual(generationRequestJsonSchema(stack.config));
    expect(request.required).toEqual(['prompt']);
    expect(request.additionalProperties).toBe(false);
    expect(request.properties.num_inference_steps).toMatchObject({ type: 'integer', minimum: 1, maximum: 77, default: 2 });
    expect(request.properties.num_images.maximum).toBe(3);
    expect(request.properties.width).toMatchObject({ type: 'integer', multipleOf: 8 });
    expect(request.properties.scheduler.enum).toContain('euler_a');
    expect(doc.paths['/v1/jobs'].post.requestBody.content['application/json'].schema).toEqual({ $ref: '#/components/schemas/GenerationRequest' });
    // The synchronous routes take the same fields as query parameters.
    const query = doc.paths['/v1/generate'].get.parameters as Json[];
    expect(query.find((p) => p.name === 'prompt')).toMatchObject({ in: 'query', required: true });
    expect(query.find((p) => p.name === 'num_inference_steps')?.schema.maximum).toBe(77);
    expect(query.find((p) => p.name === 'num_images')?.schema.maximum).toBe(1);
  });

  it('asks for a bearer key on the /v1 routes and /dreambooth when API keys are configured, and only then', () => {
    expect(doc.components.securitySchemes).toBeUndefined();
    expect(doc.paths['/v1/jobs'].post.security).toBeUndefined();
    const config = loadConfig({ MODEL_DIR: stack.config.model.dir, API_KEYS: 'a-key-of-sixteen-chars-or-more' });
    const mounted = new Set(['POST /v1/jobs', 'GET /dreambooth', 'GET /healthz']);
    const keyed = buildOpenApiDocument({ config, mounted }, '0.0.0') as Json;
    expect(keyed.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(keyed.paths['/v1/jobs'].post.security).toEqual([{ apiKey: [] }]);
    expect(keyed.paths['/v1/jobs'].post.responses['401']).toBeDefined();
    expect(keyed.paths['/dreambooth'].get.security).toEqual([{ apiKey: [] }]);
    expect(keyed.paths['/healthz'].get.security).toBeUndefined();
    expect(Object.keys(keyed.paths).sort()).toEqual(['/dreambooth', '/healthz', '/v1/jobs']);
  });

  it('has the main routes', () => {
    const documented = Object.entries(doc.paths as Json).flatMap(([p, ops]) => Object.keys(ops).map((m) => routeKey(m, p)));
    for (const key of [
      'POST /v1/jobs',
      'GET /v1/jobs/{id}',
      'GET /v1/jobs/{id}/images/{file}',
      'GET /v1/generate',
      'GET /dreambooth',
      'GET /healthz',
      'GET /readyz',
      'GET /metrics',
      'GET /openapi.json',
    ]) {
      expect(documented, key).toContain(key);
    }
  });
});

describe('against the app', () => {
  it('answers every documented path (no "no route" 404)', async () => {
    const created = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'documented', img_size: 64 }),
    });
    const { id } = (await created.json()) as { id: string };
    await pollJob(base, id);
    for (const [template, operations] of Object.entries(doc.paths as Record<string, Json>)) {
      const url = base + template.replace('{id}', id).replace('{file}', '0.png');
      for (const method of Object.keys(operations)) {
        const controller = new AbortController();
        const init: RequestInit = { method: method.toUpperCase(), signal: controller.signal, redirect: 'manual' };
        if (method === 'post') {
          init.headers = { 'content-type': 'application/json' };
          init.body = JSON.stringify({});
        }
        // Without a prompt the synchronous routes answer 400 at once instead of running a job.
        const res = await fetch(url, init);
        const type = res.headers.get('content-type') ?? '';
        const body = type.includes('application/json') ? ((await res.json()) as Json) : null;
        controller.abort();
        const label = `${method.toUpperCase()} ${template} → ${res.status}`;
        expect(res.status === 404 && body?.error?.code === 'not_found', label).toBe(false);
        expect(res.status, label).toBeLessThan(500);
      }
    }
  });

  it('documents every API route the app mounts', () => {
    const store: ImageStore = { kind: 'fake', put: async () => {}, get: async () => null, check: async () => {} };
    const monitor: QueueMonitor = {
      counts: async () => ({}),
      onJobFinished: () => () => {},
      onWebhookFinished: () => () => {},
      queues: [],
      close: async () => {},
    };
    const app = createApp({
      config: stack.config,
      queue: {} as JobQueue,
      store,
      models: new Map(),
      logger: silentLogger,
      metrics: createMetrics({ defaultMetrics: false }),
      monitor,
    });
    const mounted = listRoutes(app).map((r) => routeKey(r.method, toOpenApiPath(r.path)));
    expect(mounted).toContain('POST /v1/jobs');
    const undocumented = mounted.filter((key) => !PAGES.has(key) && !DOCUMENTED_OPERATIONS.includes(key));
    expect(undocumented, 'add these routes to OPERATIONS in api/openapi.ts').toEqual([]);
  });

  it('describes the job exactly as the API answers it, queued and succeeded', async () => {
    const res = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a documented owl', img_size: 64, num_images: 2, seed: 5, webhook: { url: 'http://127.0.0.1:9/hook' }, timeout_s: 600 }),
    });
    const queued = (await res.json()) as Json;
    const finished = await pollJob(base, queued.id);
    expect(finished.status).toBe('succeeded');
    const schema = doc.components.schemas.Job;
    for (const view of [queued, finished]) {
      expect(() => JobViewSchema.parse(view)).not.toThrow();
      expect(undocumentedFields(view, schema), 'fields the Job schema in api/response-schemas.ts lacks').toEqual([]);
    }
    expect(finished.webhook).not.toBeNull();
    expect(missingFields(finished, schema)).toEqual([]);
  });

  it('describes the workers and queue answers as the API gives them', async () => {
    const redis = createRedis(stack.config.redisUrl, 'worker');
    const registry = new WorkerRegistry(redis, stack.config.queuePrefix);
    const now = Date.now();
    await registry.put(
      { id: 'doc-worker', slot: 'gpu0', state: 'busy', currentJob: 'j', startedAt: now, lastSeenAt: now, jobsDone: 1, jobsFailed: 0, host: 'h', pid: 1, model: 'm' },
      10_000,
    );
    try {
      for (const [route, name] of [
        ['/v1/workers', 'Workers'],
        ['/v1/queue', 'QueueLoad'],
      ] as const) {
        // Both routes are always mounted: a missing entry is a gap in the document, not a reason to skip.
        expect(doc.paths[route], route).toBeDefined();
        const res = await fetch(`${base}${route}`);
        expect(res.status, route).toBe(200);
        const body = (await res.json()) as Json;
        expect(undocumentedFields(body, doc.components.schemas[name]), route).toEqual([]);
        expect(missingFields(body, doc.components.schemas[name]), route).toEqual([]);
      }
    } finally {
      await registry.remove('doc-worker');
      await redis.quit();
    }
  });
});

describe('GET /docs', () => {
  it('serves Swagger UI from this origin on the document', async () => {
    const page = await fetch(`${base}/docs`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('/docs/assets/swagger-ui-bundle.js');
    expect(html).not.toMatch(/https?:\/\//);
    const bundle = await fetch(`${base}/docs/assets/swagger-ui-bundle.js`);
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get('content-type')).toMatch(/javascript/);
    expect((await fetch(`${base}/docs/assets/swagger-ui.css`)).status).toBe(200);
    expect(await (await fetch(`${base}/docs-init.js`)).text()).toContain("url: '/openapi.json'");
  });
});

/** Keys present in `value` that the JSON schema does not list (objects, arrays, nullable unions). */
function undocumentedFields(value: unknown, schema: Json, at = ''): string[] {
  if (value === null || typeof value !== 'object') return [];
  const options: Json[] = schema.anyOf ?? schema.oneOf ?? [schema];
  const objectSchema = options.find((o) => o.type === 'object' || o.properties);
  const arraySchema = options.find((o) => o.type === 'array');
  if (Array.isArray(value)) return arraySchema ? value.flatMap((v, i) => undocumentedFields(v, arraySchema.items, `${at}[${i}]`)) : [];
  if (!objectSchema?.properties) return [];
  return Object.entries(value).flatMap(([key, v]) =>
    key in objectSchema.properties ? undocumentedFields(v, objectSchema.properties[key], `${at}.${key}`) : [`${at}.${key}`],
  );
}

/** Required properties of the schema absent from `value` (top level). */
function missingFields(value: Json, schema: Json): string[] {
  return ((schema.required ?? []) as string[]).filter((key) => !(key in value));
}
