import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { startApi, type RunningApi } from '../api/server.js';
import { loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { GENERATE_QUEUE, WEBHOOK_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';

/** Every API log line carries the request id; a client's X-Request-Id is honoured and echoed. */
const lines: Record<string, any>[] = [];
/** The same lines as written: JSON.parse keeps only the last of duplicate keys, so those need the text. */
const rawLines: string[] = [];
let api: RunningApi;
let dir: string;
let prefix: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-logs-'));
  const config = loadConfig({
    PORT: '0',
    MODEL_DIR: inject('tinyModelDir'),
    STORAGE_LOCAL_DIR: dir,
    QUEUE_PREFIX: (prefix = `test-logs-${process.pid}-${Date.now()}`),
    LOG_LEVEL: 'debug',
  });
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) {
        if (!line.trim()) continue;
        rawLines.push(line);
        lines.push(JSON.parse(line));
      }
      done();
    },
  });
  api = await startApi(config, createLogger('api', 'info', {}, sink));
});
afterAll(async () => {
  await api?.close();
  await fs.rm(dir, { recursive: true, force: true });
  // No worker ran: drop the queued jobs with their queue.
  const connection = createRedis('redis://127.0.0.1:6379', 'worker');
  for (const name of [GENERATE_QUEUE, WEBHOOK_QUEUE]) {
    const queue = new Queue(name, { connection, prefix });
    await queue.obliterate({ force: true });
    await queue.close();
  }
  await connection.quit();
});

const settle = () => new Promise((r) => setTimeout(r, 50));

it('keeps a client X-Request-Id, answers with it, and puts it on every line of the request', async () => {
  const res = await fetch(`${api.url}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': 'trace-abc.123' },
    body: JSON.stringify({ prompt: 'a logged fox', img_size: 64 }),
  });
  expect(res.status).toBe(202);
  expect(res.headers.get('x-request-id')).toBe('trace-abc.123');
  const job = (await res.json()) as { id: string };
  await settle();
  const mine = lines.filter((l) => l.reqId === 'trace-abc.123');
  // The handler's own line (with the job id) and pino-http's line for the answer.
  const queued = mine.find((l) => l.msg === 'job queued');
  expect(queued).toMatchObject({ jobId: job.id, process: 'api', level: 30 });
  const answered = mine.find((l) => l.res?.statusCode === 202);
  expect(answered?.msg).toMatch(/^POST \/v1\/jobs 202 \d+ms$/);
  expect(answered?.responseTime).toBeGreaterThanOrEqual(0);
  // One reqId key per line: the raw JSON has no duplicate.
  expect(mine.every((l) => typeof l.reqId === 'string')).toBe(true);
  const rawMine = rawLines.filter((l) => l.includes('"trace-abc.123"'));
  expect(rawMine.length).toBeGreaterThanOrEqual(2);
  expect(rawMine.filter((l) => l.split('"reqId":').length !== 2)).toEqual([]);
});

it('keeps the request id on lines logged after a body that arrived in pieces', async () => {
  const url = new URL(api.url);
  await new Promise<void>((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: '/v1/jobs', method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'slow-body' } },
      (res) => {
        res.resume();
        res.on('end', resolve);
      },
    );
    req.on('error', reject);
    req.write('{"prompt": "a fox sent');
    setTimeout(() => req.end(' slowly", "img_size": 64}'), 150);
  });
  await settle();
  expect(lines.find((l) => l.msg === 'job queued' && l.reqId === 'slow-body')).toBeDefined();
});

it('makes up an id when the client sends none or a malformed one, and logs 4xx as warnings', async () => {
  const plain = await fetch(`${api.url}/v1/jobs/does-not-exist`);
  const made = plain.headers.get('x-request-id');
  expect(made).toMatch(/^[0-9a-f-]{36}$/);
  const bad = await fetch(`${api.url}/v1/jobs/does-not-exist`, { headers: { 'x-request-id': 'has spaces and "quotes"' } });
  expect(bad.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  await settle();
  const line = lines.find((l) => l.reqId === made);
  expect(line).toMatchObject({ level: 40, res: { statusCode: 404 } });
});

it('does not log probe and scrape requests, nor request headers such as Authorization', async () => {
  const before = lines.length;
  await fetch(`${api.url}/healthz`);
  await fetch(`${api.url}/metrics`);
  await settle();
  expect(lines.slice(before).filter((l) => l.req)).toEqual([]);
  await fetch(`${api.url}/openapi.json`, { headers: { authorization: 'Bearer secret-key' } });
  await settle();
  expect(JSON.stringify(lines)).not.toContain('secret-key');
});
