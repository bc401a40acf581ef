import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadPipeline } from '../worker/pipeline/index.js';
import type { Pipeline } from '../worker/pipeline/types.js';
import { startStack, type TestStack } from './helpers/stack.js';

/** `npm run generate`, run as a process against a running stack. */
const root = path.resolve(import.meta.dirname, '..');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], options: { viaNpm?: boolean; env?: Record<string, string> } = {}): Promise<Run> {
  const [command, argv] = options.viaNpm
    ? ['npm', ['run', '--silent', 'generate', '--', ...args]]
    : [process.execPath, ['--import', 'tsx', 'cli/generate.ts', ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(command as string, argv as string[], {
      cwd: root,
      env: { ...process.env, SDJOBS_URL: '', SDJOBS_API_KEY: '', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A port nothing listens on (fetch refuses "bad ports" such as 1 before trying). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

let stack: TestStack;
let real: Pipeline;
let storage: string;
let out: string;

beforeAll(async () => {
  storage = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-cli-store-'));
  out = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-cli-out-'));
  real = await loadPipeline(inject('tinyModelDir'), { cpuThreads: 1 });
  // The real tiny model, except that a prompt with FAIL in it fails the way a model error does.
  const pipeline: Pipeline = {
    capabilities: real.capabilities,
    release: async () => undefined,
    generate: (request, options) =>
      request.prompt.includes('FAIL')
        ? Promise.reject(Object.assign(new Error('the model could not run this prompt'), { code: 'invalid_request' }))
        : real.generate(request, options),
  };
  stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_LOCAL_DIR: storage, DEFAULT_STEPS: '2' }, { pipeline });
});
afterAll(async () => {
  await stack?.close();
  await real?.release();
  await fs.rm(storage, { recursive: true, force: true });
  await fs.rm(out, { recursive: true, force: true });
});

describe('npm run generate', () => {
  it('submits N jobs at once, shows their progress and saves N PNGs of the asked size in a timestamped folder', async () => {
    const run = await runCli(['a red fox in the snow', '--n', '3', '--size', '64', '--steps', '2', '--seed', '40', '--out', out, '--url', stack.api.url], {
      viaNpm: true,
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/3 jobs submitted to http:\/\/127\.0\.0\.1:\d+/);
    expect(run.stdout).toMatch(/\[1\/3\] [0-9a-f]{8} (queued|running|done)/);
    expect(run.stdout).toMatch(/\[3\/3\] [0-9a-f]{8} done \(seed 42\)/);
    expect(run.stdout).toMatch(/saved 3 images in /);

    const folders = await fs.readdir(out);
    expect(folders).toHaveLength(1);
    expect(folders[0]).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}$/);
    const folder = path.join(out, folders[0] as string);
    const files = (await fs.readdir(folder)).sort();
    expect(files).toEqual(['01-seed40.png', '02-seed41.png', '03-seed42.png', 'jobs.json']);
    for (const file of files.filter((f) => f.endsWith('.png'))) {
      const meta = await sharp(path.join(folder, file)).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
    }
    const manifest = JSON.parse(await fs.readFile(path.join(folder, 'jobs.json'), 'utf8'));
    expect(manifest.jobs).toHaveLength(3);
    expect(manifest.prompt).toBe('a red fox in the snow');
  });

  it('takes --width/--height and --model, and reads the server from SDJOBS_URL', async () => {
    const dir = path.join(out, 'wide');
    const run = await runCli(['a wide view', '--width', '96', '--height', '64', '--model', stack.config.model.name, '--out', dir], { env: { SDJOBS_URL: stack.api.url } });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`on model ${stack.config.model.name} (explicit)`);
    const unknown = await runCli(['a wide view', '--model', 'sdxl', '--out', dir], { env: { SDJOBS_URL: stack.api.url } });
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/unknown model "sdxl"/);
    const [folder] = await fs.readdir(dir);
    const png = (await fs.readdir(path.join(dir, folder as string))).find((f) => f.endsWith('.png')) as string;
    const meta = await sharp(path.join(dir, folder as string, png)).metadata();
    expect([meta.width, meta.height]).toEqual([96, 64]);
  });

  it('exits 1 naming the job and the reason when a job fails, and still saves the others', async () => {
    const dir = path.join(out, 'failing');
    const ok = runCli(['fine', '--size', '64', '--out', dir, '--url', stack.api.url]);
    const failing = await runCli(['this will FAIL', '--n', '2', '--size', '64', '--out', dir, '--url', stack.api.url]);
    expect(failing.code).toBe(1);
    expect(failing.stderr).toMatch(/error: job [0-9a-f-]{36} failed: invalid_request: the model could not run this prompt/);
    expect(failing.stdout).toMatch(/saved 0 images/);
    expect((await ok).code).toBe(0);
  });

  it('exits 3 with a clear message when the server is unreachable', async () => {
    const port = await freePort();
    const run = await runCli(['anything', '--url', `http://127.0.0.1:${port}`, '--out', path.join(out, 'none')]);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(`cannot reach the server at http://127.0.0.1:${port} (ECONNREFUSED); is it running?`);
    await expect(fs.access(path.join(out, 'none'))).rejects.toThrow();
  });

  it('exits 3 with the server’s reason when it refuses the request', async () => {
    const run = await runCli(['anything', '--size', '70', '--url', stack.api.url, '--out', path.join(out, 'refused')]);
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/the server refused the job \(400 invalid_request\): width must be a multiple of 8/);
  });

  it('exits 2 with the usage on bad arguments', async () => {
    const none = await runCli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/error: a prompt is required/);
    expect(none.stderr).toMatch(/Usage: npm run generate/);
    const bad = await runCli(['x', '--n', 'many']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--n must be a whole number/);
  });
});
