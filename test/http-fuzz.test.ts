import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { Queue } from 'bullmq';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startApi, type RunningApi } from '../api/server.js';
import { loadConfig } from '../shared/config.js';
import { GENERATE_QUEUE, WEBHOOK_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { dropTestQueue } from './helpers/queue-teardown.js';
import { silentLogger } from './helpers/stack.js';

/**
 * Random malformed HTTP against the real app (startApi: createApp on the real Redis, a queue
 * prefix of its own): every request has at least one defect by construction — a path escape that
 * does not decode, a body that does not parse or decompress, a field or parameter the API does not
 * take, an id that does not exist, bytes that are not HTTP — and every answer must be a 4xx in the
 * error shape. Nothing may be queued, and the service must be healthy afterwards.
 */
let api: RunningApi;
let dir: string;
let prefix: string;
const redis = createRedis('redis://127.0.0.1:6379', 'worker');

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-http-fuzz-'));
  prefix = `test-http-fuzz-${process.pid}-${Date.now()}`;
  const config = loadConfig({
    PORT: '0',
    MODEL_DIR: inject('tinyModelDir'),
    STORAGE_LOCAL_DIR: dir,
    QUEUE_PREFIX: prefix,
    LOG_LEVEL: 'silent',
    WEBHOOK_SECRETS: `whsec_${randomBytes(32).toString('base64')}`,
  });
  api = await startApi(config, silentLogger);
});
afterAll(async () => {
  await api?.close();
  await new Queue(WEBHOOK_QUEUE, { connection: redis, prefix }).obliterate({ force: true }).catch(() => undefined);
  await dropTestQueue(new Queue(GENERATE_QUEUE, { connection: redis, prefix }), redis, prefix);
  await fs.rm(dir, { recursive: true, force: true });
});

// --- pieces -------------------------------------------------------------------------------

/** Percent-escapes that do not decode to UTF-8, or are not escapes at all. */
const badEscape = fc.oneof(
  fc.constantFrom('%E0%A4%A', '%ZZ', '%', '%C0%AF', '%ED%A0%80', '%FF', '%E2%82', '%%41', '%u0041'),
  fc.tuple(fc.string({ maxLength: 6 }), fc.constantFrom('%E0%A4%A', '%C3', '%G1')).map(([a, b]) => encodeURIComponent(a) + b),
);
/** Job ids that do not exist (well-formed or not). */
const missingId = fc.oneof(fc.uuid(), fc.stringMatching(/^[A-Za-z0-9-]{1,64}$/), fc.string({ minLength: 65, maxLength: 200 }).map(encodeURIComponent));
const jobRoute = fc.constantFrom('', '/events', '/images/0.png', '/cancel', '/webhooks/redeliver');
const methodFor = (route: string) => (route === '/cancel' || route === '/webhooks/redeliver' ? 'POST' : 'GET');

/** A request field value that breaks one rule or another. */
const defect: fc.Arbitrary<[string, unknown]> = fc.oneof(
  fc.constantFrom<[string, unknown]>(
    ['seed', 4294967295 + 1],
    ['seed', -1],
    ['seed', '0x10'],
    ['num_images', 0],
    ['num_images', 1000],
    ['width', 513],
    ['img_size', 'big'],
    ['num_inference_steps', 0],
    ['guidance_scale', 51],
    ['scheduler', 'heun'],
    ['model', 'someone-else'],
    ['timeout_s', 0],
    ['ttl_s', -5],
    ['prompt', ''],
    ['prompt', 42],
    ['webhook', { url: 'http://10.0.0.1/hook' }],
    ['webhook', { url: 'ftp://example.com' }],
    ['webhook', { url: 'https://example.com', events: ['nope'] }],
    ['__proto__', { admin: true }],
    ['constructor', 1],
    ['prototype', 1],
  ),
  fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !['prompt', 'negative_prompt', 'width', 'height', 'img_size', 'num_inference_steps', 'guidance_scale', 'seed', 'num_images', 'scheduler', 'model', 'webhook', 'timeout_s', 'ttl_s'].includes(k)).map((k): [string, unknown] => [k, 1]),
);

/** A request with at least one of the given defects, as a JSON object. */
const requestWith = (defects: fc.Arbitrary<[string, unknown]>) =>
  fc
    .tuple(
      fc.record({ prompt: fc.string({ minLength: 1, maxLength: 30 }), img_size: fc.constantFrom(64, 128), seed: fc.nat() }, { requiredKeys: [] }),
      fc.array(defects, { minLength: 1, maxLength: 3 }),
    )
    .map(([base, found]) => {
      const body: Record<string, unknown> = { ...base };
      for (const [key, value] of found) Object.defineProperty(body, key, { value, enumerable: true, writable: true, configurable: true });
      // A body without a usable prompt is a defect of its own; one with a prompt still has the others.
      return body;
    });
const badRequest = requestWith(defect);
/**
 * For query strings: a number where a string belongs is a defect only in JSON (`prompt=42` is the
 * prompt "42"), so those defects are left out there.
 */
const badQuery = requestWith(defect.filter(([key, value]) => !(key === 'prompt' && typeof value === 'number')));

/** The same as a query string (flat values only: a structured one is a defect there too). */
const asQuery = (body: Record<string, unknown>) =>
  Object.keys(body)
    .map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(typeof body[k] === 'object' ? JSON.stringify(body[k]) : String(body[k]))}`)
    .join('&');

type Probe = { method: string; path: string; headers?: Record<string, string>; body?: Uint8Array | string };

const json = { 'content-type': 'application/json' };
const encoders: Record<string, (b: Buffer) => Buffer> = { gzip: gzipSync, deflate: deflateSync, br: brotliCompressSync };

const probe: fc.Arbitrary<Probe> = fc.oneof(
  // Path parameters that do not decode, on every route that has one.
  fc.tuple(badEscape, jobRoute).map(([id, route]) => ({ method: methodFor(route), path: `/v1/jobs/${id}${route}` })),
  fc.tuple(fc.uuid(), badEscape).map(([id, file]) => ({ method: 'GET', path: `/v1/jobs/${id}/images/${file}` })),
  // Jobs that do not exist.
  fc.tuple(missingId, jobRoute).map(([id, route]) => ({ method: methodFor(route), path: `/v1/jobs/${id}${route}` })),
  // Bodies with a defect, plain or compressed.
  badRequest.map((body) => ({ method: 'POST', path: '/v1/jobs', headers: json, body: JSON.stringify(body) })),
  fc.tuple(badRequest, fc.constantFrom('gzip', 'deflate', 'br')).map(([body, enc]) => ({
    method: 'POST',
    path: '/v1/jobs',
    headers: { ...json, 'content-encoding': enc },
    body: new Uint8Array(encoders[enc]!(Buffer.from(JSON.stringify(body)))),
  })),
  // Bodies that are not what their headers say.
  fc.tuple(fc.uint8Array({ maxLength: 64 }), fc.constantFrom('gzip', 'deflate', 'br', 'compress', 'x-unknown', 'gzip, br')).map(([bytes, enc]) => ({
    method: 'POST',
    path: '/v1/jobs',
    headers: { ...json, 'content-encoding': enc },
    body: new Uint8Array([0xff, ...bytes]),
  })),
  fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('{', '{"prompt": "x",}', '[]', 'null', '"prompt"', '{"prompt": "x"}}', '1e999')).map((text) => ({
    method: 'POST',
    path: '/v1/jobs',
    headers: json,
    body: text,
  })),
  fc.tuple(fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'image/png'), fc.string()).map(([type, text]) => ({
    method: 'POST',
    path: '/v1/jobs',
    headers: { 'content-type': type },
    body: text,
  })),
  fc.constantFrom({ method: 'POST', path: '/v1/jobs', headers: { ...json, 'content-type': 'application/json; charset=latin-9' }, body: '{"prompt":"x"}' }),
  fc.integer({ min: 65, max: 300 }).map((depth) => ({ method: 'POST', path: '/v1/jobs', headers: json, body: `{"prompt": "x", "webhook": ${'['.repeat(depth)}${']'.repeat(depth)}}` })),
  // The synchronous routes' query strings, with a defect each.
  fc.tuple(badQuery, fc.constantFrom('/v1/generate', '/dreambooth')).map(([body, route]) => ({ method: 'GET', path: `${route}?${asQuery(body)}` })),
  fc.tuple(fc.constantFrom('/v1/generate', '/dreambooth'), badEscape).map(([route, escape]) => ({ method: 'GET', path: `${route}?prompt=x&seed=${escape}` })),
  fc.constantFrom('/v1/generate', '/dreambooth').map((route) => ({ method: 'GET', path: `${route}?prompt=x&img_size=64&img_size=128` })),
  // The listing with a parameter it does not take.
  fc.tuple(fc.constantFrom('status=done', 'limit=0', 'limit=0x10', 'limit=+5', 'cursor=%E0%A4%A', 'cursor=abc', '__proto__=1', 'order=asc'), fc.boolean()).map(([q, more]) => ({
    method: 'GET',
    path: `/v1/jobs?${q}${more ? '&limit=5' : ''}`,
  })),
  // Rotation bodies the route does not take (the service runs without keys: 409 before that).
  fc.constant({ method: 'POST', path: '/v1/webhook-secrets/rotate', headers: json, body: '{"overlap_s": -1}' }),
  // Routes that do not exist, and methods a route does not answer.
  fc.tuple(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'), fc.webPath()).map(([method, p]) => ({ method, path: `/v1/nope${p}` })),
  fc.constantFrom('PUT', 'DELETE', 'PATCH').chain((method) => fc.constantFrom('/v1/jobs', '/v1/generate', '/v1/jobs/x/cancel').map((p) => ({ method, path: p }))),
  // Header values the API reads and refuses.
  fc.string({ minLength: 256, maxLength: 300 }).map((key) => ({ method: 'POST', path: '/v1/jobs', headers: { ...json, 'idempotency-key': key.replace(/[^\x21-\x7e]/g, 'a') }, body: '{"prompt":"x"}' })),
);

async function send(p: Probe): Promise<{ status: number; type: string; body: any }> {
  const init: RequestInit = { method: p.method, redirect: 'manual', signal: AbortSignal.timeout(10_000) };
  if (p.headers) init.headers = p.headers;
  if (p.body !== undefined) init.body = p.body as BodyInit;
  const res = await fetch(`${api.url}${p.path}`, init);
  const type = res.headers.get('content-type') ?? '';
  const text = await res.text();
  let body: any = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, type, body };
}

const queued = async () => Object.values(await new Queue(GENERATE_QUEUE, { connection: redis, prefix }).getJobCounts()).reduce((a, b) => a + b, 0);

describe('malformed HTTP against the real app', () => {
  it('answers every malformed request with a 4xx in the error shape and queues nothing', async () => {
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(probe, async (p) => {
        const answer = await send(p);
        seen.set(answer.status, (seen.get(answer.status) ?? 0) + 1);
        const label = `${p.method} ${p.path.slice(0, 120)} → ${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`;
        expect(answer.status >= 400 && answer.status < 500, label).toBe(true);
        expect(answer.type, label).toMatch(/application\/json/);
        expect(typeof answer.body?.error?.code, label).toBe('string');
        expect(typeof answer.body?.error?.message, label).toBe('string');
      }),
      { numRuns: 400 },
    );
    expect(await queued()).toBe(0);
    // Many kinds of refusal, not one answer for everything.
    expect(seen.size).toBeGreaterThanOrEqual(4);
  });

  it('answers bytes that are not HTTP in the error shape too', async () => {
    const url = new URL(api.url);
    const raw = (bytes: Uint8Array) =>
      new Promise<string>((resolve) => {
        const socket = net.connect(Number(url.port), url.hostname, () => socket.end(bytes));
        let data = '';
        socket.setEncoding('latin1');
        socket.on('data', (c) => (data += c));
        socket.on('error', () => resolve(data));
        socket.on('close', () => resolve(data));
      });
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          // Request lines that are not one.
          fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => new Uint8Array([...b.map((x) => (x === 0x0d || x === 0x0a ? 0x41 : x)), 0x0d, 0x0a, 0x0d, 0x0a])),
          fc.string({ maxLength: 60 }).map((s) => new TextEncoder().encode(`${s.replace(/[\r\n]/g, '')} HTTP/1.1\r\n\r\n`)),
          // A valid line with a broken header.
          fc.string({ minLength: 1, maxLength: 20 }).map((s) => new TextEncoder().encode(`GET /healthz HTTP/1.1\r\nHost: x\r\n${s.replace(/[\r\n:]/g, '')} bad\r\n\r\n`)),
        ),
        async (bytes) => {
          const data = await raw(bytes);
          // Nothing back at all is allowed only for a connection Node itself reset; otherwise a JSON 4xx.
          if (data === '') return;
          const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1]);
          const label = JSON.stringify(new TextDecoder().decode(bytes).slice(0, 80));
          expect(status >= 400 && status < 500, `${label} → ${data.slice(0, 80)}`).toBe(true);
          expect(JSON.parse(data.split('\r\n\r\n')[1] ?? '').error.code, label).toEqual(expect.any(String));
        },
      ),
      { numRuns: 150 },
    );
    expect(await queued()).toBe(0);
  });

  it('is healthy afterwards: it still takes a good job', async () => {
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    const res = await fetch(`${api.url}/v1/jobs`, { method: 'POST', headers: json, body: JSON.stringify({ prompt: 'after the storm', img_size: 64 }) });
    expect(res.status).toBe(202);
  });
});
