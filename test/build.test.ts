import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultWorkerCommand } from '../autoscaler/local-driver.js';
import { createRedis } from '../shared/redis.js';
import { build, RUNTIME_ASSETS } from '../scripts/build.js';
import { deletePrefix, repoRoot, waitFor } from './helpers/autoscaler.js';
import { freePort } from './helpers/webhook-receiver.js';

/**
 * `npm run build` (production runs compiled JavaScript): the build is made into a folder of its own
 * inside the repository (so node_modules resolves), then `node <out>/scripts/start.js` runs from a
 * working directory elsewhere, as in the image: the tiny-model writer finds the CLIP tokenizer, the
 * API its pages, Swagger UI and the package version, the autoscaler spawns workers as plain Node on
 * the compiled worker (no tsx), and a job comes back as a PNG.
 */
const outDir = path.join(repoRoot, 'test-results', `build-${process.pid}-${randomUUID().slice(0, 6)}`);
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-dist-'));
const prefix = `test-dist-${randomUUID().slice(0, 8)}`;
let service: ChildProcess | undefined;
let output = '';
let baseUrl = '';

beforeAll(async () => {
  build(outDir);
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  service = spawn(process.execPath, [path.join(outDir, 'scripts/start.js')], {
    cwd: workDir,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      QUEUE_PREFIX: prefix,
      LOG_LEVEL: 'info',
      AUTOSCALER_GPUS: 'none',
      AUTOSCALER_CPU_SLOTS: '1',
      AUTOSCALER_INTERVAL_MS: '100',
      WORKER_CPU_THREADS: '1',
      WORKER_HEARTBEAT_MS: '200',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  service.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  service.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitFor('the compiled service to answer /readyz', async () => (await fetch(`${baseUrl}/readyz`).catch(() => null))?.ok, 60_000, 200);
}, 180_000);

afterAll(async () => {
  if (service && service.exitCode === null) {
    const exited = new Promise((resolve) => service?.once('exit', resolve));
    service.kill('SIGTERM');
    await exited;
  }
  const redis = createRedis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', 'worker');
  await deletePrefix(redis, prefix);
  redis.disconnect();
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.rmSync(workDir, { recursive: true, force: true });
}, 60_000);

describe('npm run build', () => {
  it('puts every file the compiled modules read beside them, and marks dist/ as ES modules', () => {
    for (const asset of RUNTIME_ASSETS) expect(fs.existsSync(path.join(outDir, asset)), asset).toBe(true);
    for (const entry of ['api/main.js', 'worker/main.js', 'autoscaler/main.js', 'notifier/main.js', 'scripts/start.js', 'scripts/make-tiny-model.js', 'scripts/healthcheck.js']) {
      expect(fs.existsSync(path.join(outDir, entry)), entry).toBe(true);
    }
    expect(JSON.parse(fs.readFileSync(path.join(outDir, 'package.json'), 'utf8'))).toMatchObject({ type: 'module' });
    // Tests, benchmarks and build tools are not shipped.
    for (const absent of ['test', 'bench', 'scripts/build.js', 'scripts/build-kernels.js']) expect(fs.existsSync(path.join(outDir, absent)), absent).toBe(false);
  });

  it('serves the playground, the API docs and the version from the compiled API, in another working directory', async () => {
    const page = await fetch(`${baseUrl}/`);
    expect(page.status, output).toBe(200);
    expect(await page.text()).toContain('<html');
    expect((await fetch(`${baseUrl}/docs`)).status).toBe(200);
    const openapi = (await (await fetch(`${baseUrl}/openapi.json`)).json()) as { info: { version: string } };
    expect(openapi.info.version).toBe(JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).version);
    // The compiled tiny-model writer found the tokenizer and wrote into the working directory.
    expect(fs.existsSync(path.join(workDir, 'models/tiny-sd/tokenizer/vocab.json'))).toBe(true);
  });

  it('runs a job on a worker that the compiled autoscaler spawned as plain Node on dist/worker/main.js', async () => {
    const res = await fetch(`${baseUrl}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', prefer: 'wait=50' },
      body: JSON.stringify({ prompt: 'a compiled fox', img_size: 64, num_inference_steps: 2, seed: 3 }),
    });
    const job = (await res.json()) as { status: string; outputs: { images: { url: string }[] } };
    expect(job.status, output).toBe('succeeded');
    const png = Buffer.from(await (await fetch(new URL(job.outputs.images[0]?.url as string, baseUrl))).arrayBuffer());
    expect(png.subarray(1, 4).toString()).toBe('PNG');

    const workers = (await (await fetch(`${baseUrl}/v1/workers`)).json()) as { workers: { pid: number }[] };
    const pid = workers.workers[0]?.pid as number;
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    expect(argv).toEqual([process.execPath, path.join(outDir, 'worker/main.js')]);
  });
});

describe('defaultWorkerCommand', () => {
  it('runs the compiled worker on plain Node from dist, and the TypeScript one through tsx from the sources', () => {
    expect(defaultWorkerCommand('/app/dist/autoscaler/local-driver.js')).toEqual([process.execPath, '/app/dist/worker/main.js']);
    expect(defaultWorkerCommand('/src/autoscaler/local-driver.ts')).toEqual([process.execPath, '--import', 'tsx', '/src/worker/main.ts']);
  });
});
