import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { linkBase } from '../shared/job-view.js';
import { startStack, type TestStack } from './helpers/stack.js';

/**
 * Links are absolute only from PUBLIC_URL or from a proxy TRUST_PROXY trusts; otherwise they are
 * relative. A client's Host (or an untrusted X-Forwarded-Host) is never echoed into links, never
 * stored with the job, never reused in webhook bodies.
 */
let dir: string;
const stacks: TestStack[] = [];

async function stackWith(env: Record<string, string>): Promise<TestStack> {
  const stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, ...env }, { worker: false, notifier: false });
  stacks.push(stack);
  return stack;
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-links-'));
});
afterAll(async () => {
  for (const stack of stacks) await stack.close();
  await fs.rm(dir, { recursive: true, force: true });
});

/** POST /v1/jobs with headers fetch would not let us set (Host). */
function submit(stack: TestStack, headers: Record<string, string>): Promise<{ status: number; location: string | undefined; job: Record<string, any> }> {
  const url = new URL(stack.api.url);
  const body = JSON.stringify({ prompt: 'a linked fox', img_size: 64 });
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: '/v1/jobs', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, job: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const HOSTILE = { host: 'evil.example', 'x-forwarded-host': 'evil-proxy.example', 'x-forwarded-proto': 'https' };

async function storedData(stack: TestStack, id: string): Promise<string> {
  const job = await stack.queue.getJob(id);
  return JSON.stringify(job?.data);
}

describe('without PUBLIC_URL or a trusted proxy', () => {
  it('answers relative links and stores nothing from Host', async () => {
    const stack = await stackWith({});
    const { status, location, job } = await submit(stack, HOSTILE);
    expect(status).toBe(202);
    expect(job.links.self).toBe(`/v1/jobs/${job.id}`);
    expect(location).toBe(`/v1/jobs/${job.id}`);
    const read = (await (await fetch(`${stack.api.url}/v1/jobs/${job.id}`, { headers: { 'x-forwarded-host': 'evil-proxy.example' } })).json()) as any;
    expect(read.links.self).toBe(`/v1/jobs/${job.id}`);
    expect(await storedData(stack, job.id)).not.toMatch(/evil|127\.0\.0\.1|localhost/);
    // Webhook bodies are rendered with the same rule, outside any request.
    expect(linkBase(stack.config)).toBe('');
  });
});

describe('with PUBLIC_URL', () => {
  it('answers absolute links on it, whatever the request says', async () => {
    const stack = await stackWith({ PUBLIC_URL: 'https://images.example.com/' });
    const { job, location } = await submit(stack, HOSTILE);
    expect(job.links.self).toBe(`https://images.example.com/v1/jobs/${job.id}`);
    expect(location).toBe(job.links.self);
    expect(await storedData(stack, job.id)).not.toMatch(/evil|images\.example/);
    expect(linkBase(stack.config)).toBe('https://images.example.com');
  });
});

describe('with TRUST_PROXY', () => {
  it("uses a trusted proxy's forwarded scheme and host, and nothing else", async () => {
    const stack = await stackWith({ TRUST_PROXY: 'loopback' });
    const forwarded = await submit(stack, { host: 'internal:8000', 'x-forwarded-host': 'api.example.com', 'x-forwarded-proto': 'https' });
    expect(forwarded.job.links.self).toBe(`https://api.example.com/v1/jobs/${forwarded.job.id}`);
    // A trusted proxy that forwarded no host, or a host that is not one: relative, never Host.
    expect((await submit(stack, { host: 'evil.example' })).job.links.self).toMatch(/^\/v1\/jobs\//);
    expect((await submit(stack, { 'x-forwarded-host': 'a b/c' })).job.links.self).toMatch(/^\/v1\/jobs\//);
    expect((await submit(stack, { 'x-forwarded-host': 'ok.example', 'x-forwarded-proto': 'javascript' })).job.links.self).toMatch(/^\/v1\/jobs\//);
    expect(await storedData(stack, forwarded.job.id)).not.toMatch(/api\.example|internal/);
    expect(linkBase(stack.config)).toBe('');
  });

  it('ignores the forwarded headers of a peer it does not trust', async () => {
    const stack = await stackWith({ TRUST_PROXY: '10.0.0.0/8' });
    const { job } = await submit(stack, HOSTILE);
    expect(job.links.self).toBe(`/v1/jobs/${job.id}`);
  });
});
