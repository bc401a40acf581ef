import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startApi, type RunningApi } from '../api/server.js';
import { loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { dropTestQueue } from './helpers/queue-teardown.js';

/**
 * Requests broken below the JSON level — percent-escapes that do not decode, bodies that do not
 * decompress, HTTP that does not parse — answer 4xx in the API's error shape, queue nothing, and a
 * client that leaves mid-request is logged at info, not as an error of ours.
 */
const lines: Record<string, any>[] = [];
let api: RunningApi;
let dir: string;
let prefix: string;
const redis = createRedis('redis://127.0.0.1:6379', 'worker');
let queue: Queue;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-malformed-'));
  prefix = `test-malformed-${process.pid}-${Date.now()}`;
  const config = loadConfig({ PORT: '0', MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, QUEUE_PREFIX: prefix, LOG_LEVEL: 'info' });
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line));
      done();
    },
  });
  api = await startApi(config, createLogger('api', 'info', {}, sink));
  queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix });
});
afterAll(async () => {
  await api?.close();
  await dropTestQueue(queue, redis, prefix);
  await fs.rm(dir, { recursive: true, force: true });
});

const queued = async () => Object.values(await queue.getJobCounts()).reduce((a, b) => a + b, 0);

async function expectErrorShape(res: Response, status?: number): Promise<Record<string, any>> {
  if (status !== undefined) expect(res.status).toBe(status);
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(500);
  expect(res.headers.get('content-type')).toMatch(/application\/json/);
  const body = (await res.json()) as Record<string, any>;
  expect(typeof body.error?.code).toBe('string');
  expect(typeof body.error?.message).toBe('string');
  return body.error;
}

describe('percent-escapes that do not decode', () => {
  it('answer 400 malformed_path on every route with a path parameter', async () => {
    for (const [method, url] of [
      ['GET', '/v1/jobs/%E0%A4%A'],
      ['GET', '/v1/jobs/%E0%A4%A/events'],
      ['GET', '/v1/jobs/%E0%A4%A/images/0.png'],
      ['GET', '/v1/jobs/abc/images/%E0%A4%A'],
      ['GET', '/v1/jobs/%ZZ'],
      ['POST', '/v1/jobs/%E0%A4%A/cancel'],
      ['POST', '/v1/jobs/%C0%AF/cancel'],
    ] as const) {
      const error = await expectErrorShape(await fetch(`${api.url}${url}`, { method }), 400);
      expect(error, `${method} ${url}`).toMatchObject({ code: 'malformed_path', field: 'path' });
    }
    expect(await queued()).toBe(0);
  });
});

describe('bodies that do not match their Content-Encoding', () => {
  const post = (encoding: string, body: Buffer) =>
    fetch(`${api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': encoding }, body: new Uint8Array(body) });

  it('answer 400 malformed_body for corrupt gzip, deflate and br', async () => {
    const json = Buffer.from(JSON.stringify({ prompt: 'x' }));
    const truncatedGzip = gzipSync(json).subarray(0, 12);
    for (const [encoding, body] of [
      ['gzip', Buffer.from('not gzip at all')],
      ['gzip', truncatedGzip],
      ['deflate', Buffer.from('not deflate')],
      ['br', Buffer.from([0xff, 0xff, 0xff, 0xff, 0x00])],
      ['br', brotliCompressSync(json).subarray(0, 3)],
    ] as const) {
      const error = await expectErrorShape(await post(encoding, body), 400);
      expect(error.code, encoding).toBe('malformed_body');
    }
    const unknown = await expectErrorShape(await post('compress', json), 415);
    expect(unknown.code).toBe('unsupported_encoding');
    expect(await queued()).toBe(0);
  });

  it('still takes a well-formed compressed body', async () => {
    const res = await post('gzip', gzipSync(Buffer.from(JSON.stringify({ prompt: 'a gzipped fox', img_size: 64 }))));
    expect(res.status).toBe(202);
    await queue.obliterate({ force: true });
  });
});

/** Sends raw bytes and reads the whole answer. */
function raw(bytes: string): Promise<{ status: number; headers: string; body: string }> {
  const url = new URL(api.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => socket.end(bytes));
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => (data += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), headers: head, body });
    });
  });
}

describe('HTTP that does not parse', () => {
  it('answers in the error shape, not with a bare status line', async () => {
    for (const [bytes, status, code] of [
      ['GARBAGE\r\n\r\n', 400, 'malformed_http'],
      ['GET /v1/jobs HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n', 400, 'malformed_http'],
      ['POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', 400, 'malformed_http'],
      [`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'headers_too_large'],
    ] as const) {
      const answer = await raw(bytes);
      expect(answer.status, bytes.slice(0, 40)).toBe(status);
      expect(answer.headers).toMatch(/content-type: application\/json/i);
      expect(JSON.parse(answer.body).error.code).toBe(code);
    }
    expect(await queued()).toBe(0);
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
  });
});

describe('a client that goes away mid-request', () => {
  it('is logged at info, never as an unhandled error', async () => {
    const url = new URL(api.url);
    const before = lines.length;
    await new Promise<void>((resolve) => {
      const req = http.request({
        host: url.hostname,
        port: url.port,
        path: '/v1/jobs',
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': '1000', 'x-request-id': 'leaves-early' },
      });
      req.on('error', () => resolve());
      req.write('{"prompt": "half a bo');
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 100);
    });
    await new Promise((r) => setTimeout(r, 300));
    const mine = lines.slice(before).filter((l) => l.reqId === 'leaves-early');
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.filter((l) => l.level >= 50)).toEqual([]);
    expect(mine.some((l) => l.msg === 'client went away before its answer' && l.level === 30)).toBe(true);
    expect(lines.slice(before).some((l) => l.msg === 'unhandled error')).toBe(false);
    expect(await queued()).toBe(0);
  });
});
