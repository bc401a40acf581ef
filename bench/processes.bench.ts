import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { API_NODE_FLAGS } from '../api/node-flags.js';
import { createRedis } from '../shared/redis.js';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { deletePrefix } from '../test/helpers/autoscaler.js';

/**
 * `npm run bench:processes`: what running compiled JavaScript (dist/) changes against running the
 * TypeScript sources through tsx, per process:
 *  - worker: spawn → first log line (Node and the modules loaded) and spawn → `ready` (the tiny
 *    model loaded, taking jobs), and the RSS of the worker's process tree once ready;
 *  - API: RSS of its process tree after BENCH_SECONDS of POST /v1/jobs from BENCH_CONNECTIONS
 *    concurrent clients (the jobs are dropped afterwards), with the requests it answered.
 * It prints figures only. Uses dist/ as `npm run build` left it (run that first). The load comes
 * from this process with fetch, on the same machine: compare the two columns, not the absolutes.
 *   BENCH_RUNS (5) worker starts per variant, BENCH_SECONDS (10), BENCH_CONNECTIONS (50).
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RUNS = Number(process.env['BENCH_RUNS'] ?? 5);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 50);
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';

const VARIANTS = {
  tsx: (entry: string) => [process.execPath, '--import', 'tsx', path.join(root, `${entry}.ts`)],
  // As the image, compose and Kubernetes run them: the API with its flags (api/node-flags.ts).
  compiled: (entry: string) => [process.execPath, ...(entry === 'api/main' ? API_NODE_FLAGS : []), path.join(root, 'dist', `${entry}.js`)],
} as const;
type Variant = keyof typeof VARIANTS;

/** RSS of a process and its descendants (tsx runs an esbuild service beside Node), in MB. */
function treeRssMb(pid: number): number {
  let kb = 0;
  const visit = (p: number) => {
    try {
      kb += Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
      for (const task of fs.readdirSync(`/proc/${p}/task`)) {
        for (const child of fs.readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) visit(Number(child));
      }
    } catch {
      // gone
    }
  };
  visit(pid);
  return kb / 1024;
}

function start(command: string[], env: NodeJS.ProcessEnv, onLine: (line: Record<string, unknown>) => void): ChildProcess {
  const child = spawn(command[0] as string, command.slice(1), { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let buffer = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        onLine(JSON.parse(text) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function dropPrefix(prefix: string): Promise<void> {
  const redis = createRedis(REDIS_URL, 'worker');
  await deletePrefix(redis, prefix);
  redis.disconnect();
}

async function workerStart(variant: Variant, modelDir: string, dataDir: string): Promise<{ loadedMs: number; readyMs: number; rssMb: number }> {
  const prefix = `bench-proc-${randomUUID().slice(0, 8)}`;
  const started = performance.now();
  let loadedMs = 0;
  let resolveReady!: (ms: number) => void;
  const ready = new Promise<number>((resolve) => (resolveReady = resolve));
  const child = start(
    VARIANTS[variant]('worker/main'),
    { QUEUE_PREFIX: prefix, MODEL_DIR: modelDir, STORAGE_LOCAL_DIR: dataDir, WORKER_ID: `bench-${variant}`, WORKER_CPU_THREADS: '1', LOG_LEVEL: 'info', REDIS_URL },
    (line) => {
      loadedMs ||= performance.now() - started;
      if (line['msg'] === 'worker ready') resolveReady(performance.now() - started);
    },
  );
  const timeout = setTimeout(() => resolveReady(Number.NaN), 120_000);
  const readyMs = await ready;
  clearTimeout(timeout);
  // Let the ready worker settle (its first blocking fetch of a job) before reading its memory.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const rssMb = treeRssMb(child.pid as number);
  await stop(child);
  await dropPrefix(prefix);
  return { loadedMs, readyMs, rssMb };
}

async function apiUnderLoad(variant: Variant, modelDir: string, dataDir: string): Promise<{ requests: number; errors: number; rssIdleMb: number; rssMb: number }> {
  const prefix = `bench-proc-${randomUUID().slice(0, 8)}`;
  const port = 18_400 + Math.floor(Math.random() * 90);
  let resolveUp!: () => void;
  const up = new Promise<void>((resolve) => (resolveUp = resolve));
  const child = start(
    VARIANTS[variant]('api/main'),
    { QUEUE_PREFIX: prefix, MODEL_DIR: modelDir, STORAGE_LOCAL_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', REDIS_URL, MAX_STEPS: '50' },
    () => undefined,
  );
  for (let i = 0; i < 200; i++) {
    if (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)) {
      resolveUp();
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await up;
  const rssIdleMb = treeRssMb(child.pid as number);
  const body = JSON.stringify({ prompt: 'a benchmark fox', img_size: 64, num_inference_steps: 1 });
  const deadline = performance.now() + SECONDS * 1000;
  let requests = 0;
  let errors = 0;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < deadline) {
        const res = await fetch(`http://127.0.0.1:${port}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).catch(() => null);
        await res?.arrayBuffer().catch(() => undefined);
        if (res?.status === 202) requests += 1;
        else errors += 1;
      }
    }),
  );
  const rssMb = treeRssMb(child.pid as number);
  await stop(child);
  await dropPrefix(prefix);
  return { requests, errors, rssIdleMb, rssMb };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const fmt = (n: number, digits = 0) => n.toFixed(digits).padStart(8);

async function main(): Promise<void> {
  if (!fs.existsSync(path.join(root, 'dist/worker/main.js'))) {
    process.stderr.write('dist/ is missing: run `npm run build` first\n');
    process.exit(2);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-bench-proc-'));
  try {
    const modelDir = path.join(work, 'tiny-sd');
    await writeTinyModel(modelDir);
    const dataDir = path.join(work, 'images');
    process.stdout.write(`node ${process.version}, ${os.availableParallelism()} cores; worker starts: ${RUNS} per variant (alternating); API load: ${SECONDS} s × ${CONNECTIONS} connections\n\n`);

    const starts: Record<Variant, { loadedMs: number; readyMs: number; rssMb: number }[]> = { tsx: [], compiled: [] };
    for (let i = 0; i < RUNS; i++) {
      for (const variant of (i % 2 === 0 ? ['tsx', 'compiled'] : ['compiled', 'tsx']) as Variant[]) starts[variant].push(await workerStart(variant, modelDir, dataDir));
    }
    process.stdout.write('worker (median of runs)          tsx  compiled\n');
    const row = (label: string, pick: (s: { loadedMs: number; readyMs: number; rssMb: number }) => number, digits = 0) =>
      process.stdout.write(`  ${label.padEnd(28)}${fmt(median(starts.tsx.map(pick)), digits)}${fmt(median(starts.compiled.map(pick)), digits)}\n`);
    row('spawn → first log line, ms', (s) => s.loadedMs);
    row('spawn → ready, ms', (s) => s.readyMs);
    row('RSS when ready, MB', (s) => s.rssMb, 1);

    const load: Partial<Record<Variant, Awaited<ReturnType<typeof apiUnderLoad>>>> = {};
    for (const variant of ['tsx', 'compiled'] as Variant[]) load[variant] = await apiUnderLoad(variant, modelDir, dataDir);
    process.stdout.write('\nAPI                                tsx  compiled\n');
    process.stdout.write(`  ${'RSS idle, MB'.padEnd(28)}${fmt(load.tsx?.rssIdleMb ?? 0, 1)}${fmt(load.compiled?.rssIdleMb ?? 0, 1)}\n`);
    process.stdout.write(`  ${'RSS after the load, MB'.padEnd(28)}${fmt(load.tsx?.rssMb ?? 0, 1)}${fmt(load.compiled?.rssMb ?? 0, 1)}\n`);
    process.stdout.write(`  ${'POSTs answered 202'.padEnd(28)}${fmt(load.tsx?.requests ?? 0)}${fmt(load.compiled?.requests ?? 0)}\n`);
    process.stdout.write(`  ${'other answers / errors'.padEnd(28)}${fmt(load.tsx?.errors ?? 0)}${fmt(load.compiled?.errors ?? 0)}\n`);
    process.stdout.write(
      `\nworker_ready_ms_tsx=${median(starts.tsx.map((s) => s.readyMs)).toFixed(0)} worker_ready_ms_compiled=${median(starts.compiled.map((s) => s.readyMs)).toFixed(0)} ` +
        `rss_worker_mb_tsx=${median(starts.tsx.map((s) => s.rssMb)).toFixed(1)} rss_worker_mb_compiled=${median(starts.compiled.map((s) => s.rssMb)).toFixed(1)} ` +
        `rss_api_mb_tsx=${load.tsx?.rssMb.toFixed(1)} rss_api_mb_compiled=${load.compiled?.rssMb.toFixed(1)}\n`,
    );
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

await main();
