import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startStack, type TestStack } from './helpers/stack.js';

/** Bull Board at /admin/queues: basic auth with ADMIN_USER/ADMIN_PASSWORD, absent without them. */
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('with ADMIN_USER and ADMIN_PASSWORD', () => {
  let stack: TestStack;
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-admin-'));
    stack = await startStack(
      { MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir, ADMIN_USER: 'ops', ADMIN_PASSWORD: 'correct horse' },
      { worker: false },
    );
  });
  afterAll(async () => {
    await stack?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('asks for credentials and refuses wrong ones', async () => {
    const none = await fetch(`${stack.api.url}/admin/queues`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic realm="sd-jobs admin"/);
    const wrong = await fetch(`${stack.api.url}/admin/queues`, { headers: { authorization: basic('ops', 'wrong') } });
    expect(wrong.status).toBe(401);
    const api = await fetch(`${stack.api.url}/admin/queues/api/queues`, { headers: { authorization: basic('admin', 'correct horse') } });
    expect(api.status).toBe(401);
  });

  it('serves the dashboard and its API, showing the generate queue with a queued job', async () => {
    const auth = { authorization: basic('ops', 'correct horse') };
    await fetch(`${stack.api.url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'seen on the board', img_size: 64 }),
    });
    const page = await fetch(`${stack.api.url}/admin/queues`, { headers: auth });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    const html = await page.text();
    expect(html).toContain('<base href="/admin/queues/"');
    expect(html).toContain('sd-jobs queues');
    const asset = /src="(static\/js\/main[^"]+\.js)"/.exec(html)?.[1];
    expect(asset).toBeDefined();
    expect((await fetch(`${stack.api.url}/admin/queues/${asset}`, { headers: auth })).status).toBe(200);
    // Bull Board's page links a web font host; the policy keeps the browser on this origin.
    expect(page.headers.get('content-security-policy')).toMatch(/font-src 'self'/);

    const res = await fetch(`${stack.api.url}/admin/queues/api/queues?activeQueue=generate&status=waiting`, { headers: auth });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { queues: { name: string; counts: Record<string, number> }[] };
    const names = body.queues.map((q) => q.name);
    expect(names).toContain('generate');
    expect(body.queues.find((q) => q.name === 'generate')?.counts.waiting).toBe(1);
  });
});

describe('without admin credentials', () => {
  let stack: TestStack;
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-noadmin-'));
    stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: dir }, { worker: false });
  });
  afterAll(async () => {
    await stack?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('has no dashboard at all: 404', async () => {
    const res = await fetch(`${stack.api.url}/admin/queues`, { headers: { authorization: basic('admin', 'admin') } });
    expect(res.status).toBe(404);
    expect(((await res.json()) as any).error.code).toBe('not_found');
  });
});
