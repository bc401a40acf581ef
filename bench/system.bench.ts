/**
 * The whole system against a known GPU time: the real API, Redis, worker and notifier processes
 * and storage (a local folder, and S3 through s3rver), with the model replaced by a stand-in whose
 * cost per image is a fixed timer (`stand-in-pipeline.ts`): the CPU is idle while it "runs", as it
 * is while a GPU generates, and everything else — queue, processor, 512 px PNG encoding, upload,
 * events, the API's waits — is the production code. A benchmark, not a test: it prints figures and
 * asserts nothing.
 *
 *   npm run bench:system
 *   BENCH_STORAGE=local BENCH_THROUGHPUT_S=3 BENCH_WAIT_JOBS=10 BENCH_POST_S=5 npm run bench:system   # quicker
 *
 * Environment (defaults in brackets):
 *   BENCH_STORAGE        storage drivers to run, side by side [local,s3]; the summary line is the first's
 *   BENCH_COSTS_MS       pipeline milliseconds per image for the throughput runs [100,20]
 *   BENCH_WORKERS        worker counts for the throughput runs [1,2]
 *   BENCH_THROUGHPUT_S   ideal seconds of work per throughput run (jobs = workers × this ÷ cost) [5]
 *   BENCH_WAIT_JOBS      jobs per client style, one at a time [20]
 *   BENCH_WAIT_COST_MS   pipeline milliseconds per image for the client-style runs [20]
 *   BENCH_POLL_MS        the polling client's interval [100]
 *   BENCH_POST_S         seconds of POST /v1/jobs load [10]; 0 skips it
 *   BENCH_POST_CONNECTIONS  concurrent connections of that load [50]
 *   BENCH_SIZE, BENCH_STEPS  image side and steps of every job [512, 20]
 *   BENCH_KEEP=1         keep the temporary folder (process logs, images)
 *   BENCH_RUNTIME        compiled: the services built with `npm run build`'s code into
 *                        node_modules/.cache/sd-jobs-bench/dist and run as production runs them
 *                        (`node dist/…js`, the API with api/node-flags.ts); tsx: the sources
 *                        through tsx, as `npm start` runs them [compiled]
 *   REDIS_URL            [redis://127.0.0.1:6379]; the run uses a queue prefix of its own and deletes it
 *
 * Processes: the API (`api/main.ts`), the notifier (`notifier/main.ts`) and each worker
 * (`worker/main.ts`) run as their own Node processes, compiled as production runs them (the
 * autoscaler's workers: `node dist/worker/main.js`); a worker gets `--import
 * …/bench/stand-in-register.mjs`, which swaps the stand-in (compiled beside it) in for
 * `worker/pipeline/index` and nothing else. s3rver runs in a process of its own so its work does
 * not delay this process's clocks.
 *
 * CPU: each throughput run reads the CPU time the workers, the API and the notifier used (/proc),
 * Redis's (INFO cpu; the server is shared) and this process's, per job, and from it the ceiling the
 * machine's cores put on throughput ÷ ideal: where that ceiling is below 1 the run is CPU-bound,
 * not waiting on anything, and no scheduling can reach the ideal on this machine.
 *
 * Figures:
 *   throughput ÷ ideal  jobs per second at saturation (finish times between the 10th and 90th
 *                       percentile job) ÷ (workers ÷ cost per image)
 *   overhead            what the client sees from POST to having the result, minus the pipeline's
 *                       own time (the cost per image); includes queueing, encoding and upload
 *   beyond run          the same, minus the job's run time on the worker (finished_at − started_at)
 *                       instead: what the submission and the wait add around the job
 *   wait_p50_ms / wait_p90_ms (summary)  the worst "beyond run" among the clients the service
 *                       answers when the job ends (Prefer: wait, sync GET, SSE, webhook); polling
 *                       is shown but not counted, its delay being the client's own timer
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Queue } from 'bullmq';
import ts from 'typescript';
import { API_NODE_FLAGS } from '../api/node-flags.js';
import { build } from '../scripts/build.js';
import { encodeImage } from '../worker/image-encoding.js';
import { GENERATE_QUEUE, WEBHOOK_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { naturalImage } from './natural-image.js';
import { STAND_IN_MODEL } from './stand-in-pipeline.js';

const list = (name: string, fallback: string) => (process.env[name] ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
const num = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number ≥ 0, got ${process.env[name]}`);
  return value;
};

const STORAGES = list('BENCH_STORAGE', 'local,s3') as Array<'local' | 's3'>;
const COSTS = list('BENCH_COSTS_MS', '100,20').map(Number);
const WORKERS = list('BENCH_WORKERS', '1,2').map(Number).sort((a, b) => a - b);
const THROUGHPUT_S = num('BENCH_THROUGHPUT_S', 5);
const WAIT_JOBS = num('BENCH_WAIT_JOBS', 20);
const WAIT_COST = num('BENCH_WAIT_COST_MS', 20);
const POLL_MS = num('BENCH_POLL_MS', 100);
const POST_S = num('BENCH_POST_S', 10);
const POST_CONNECTIONS = num('BENCH_POST_CONNECTIONS', 50);
const SIZE = num('BENCH_SIZE', 512);
const STEPS = num('BENCH_STEPS', 20);
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const RUNTIME = (process.env['BENCH_RUNTIME'] ?? 'compiled') as 'compiled' | 'tsx';
if (RUNTIME !== 'compiled' && RUNTIME !== 'tsx') throw new Error(`BENCH_RUNTIME: expected compiled or tsx, got ${RUNTIME}`);

for (const s of STORAGES) if (s !== 'local' && s !== 's3') throw new Error(`BENCH_STORAGE: expected local and/or s3, got ${s}`);
for (const c of COSTS) if (!(c > 0)) throw new Error('BENCH_COSTS_MS: expected milliseconds > 0');

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/**
 * Where the services are compiled for the run (`npm run build`'s output, and the stand-in beside
 * it): under node_modules, so that the compiled code finds the packages as dist/ does.
 */
const distDir = path.join(root, 'node_modules', '.cache', 'sd-jobs-bench', 'dist');

/** The services as production runs them (tsc output), plus the stand-in compiled beside them. */
function buildServices(): void {
  build(distDir);
  const benchOut = path.join(distDir, 'bench');
  fs.mkdirSync(benchOut, { recursive: true });
  for (const name of ['stand-in-pipeline', 'natural-image']) {
    const source = fs.readFileSync(path.join(root, 'bench', `${name}.ts`), 'utf8');
    const { outputText } = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
    fs.writeFileSync(path.join(benchOut, `${name}.js`), outputText);
  }
  for (const name of ['stand-in-register.mjs', 'stand-in-resolve.mjs']) fs.copyFileSync(path.join(root, 'bench', name), path.join(benchOut, name));
}
/** Epoch milliseconds with sub-millisecond resolution, comparable with the service's timestamps. */
const now = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------------
// Processes

interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<number | null>;
  log: string;
}

const running = new Set<Proc>();

/**
 * Starts `entry` (a TypeScript path) as production does: compiled (`node dist/<entry>.js`, the API
 * with its flags), or through tsx with BENCH_RUNTIME=tsx; `service: false` always runs through tsx.
 */
function startProcess(name: string, entry: string, env: Record<string, string>, logDir: string, options: { standIn?: boolean; service?: boolean } = {}): Proc {
  const log = path.join(logDir, `${name}.log`);
  const fd = fs.openSync(log, 'a');
  const compiled = RUNTIME === 'compiled' && options.service !== false;
  const flags = entry === 'api/main.ts' ? [...API_NODE_FLAGS] : [];
  const args = compiled
    ? [...flags, ...(options.standIn ? ['--import', path.join(distDir, 'bench', 'stand-in-register.mjs')] : []), path.join(distDir, entry.replace(/\.ts$/, '.js'))]
    : [...flags, '--import', 'tsx', ...(options.standIn ? ['--import', './bench/stand-in-register.mjs'] : []), entry];
  const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc = { name, child, exited, log };
  running.add(proc);
  void exited.then(() => running.delete(proc));
  return proc;
}

async function stopProcess(proc: Proc, graceMs = 15_000): Promise<void> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill('SIGTERM');
  const code = await Promise.race([proc.exited, sleep(graceMs).then(() => 'late' as const)]);
  if (code === 'late') {
    proc.child.kill('SIGKILL');
    await proc.exited;
  }
}

/** Resident set size in MB, from /proc (Linux) or ps. */
function rssMb(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb ? Number(kb) / 1024 : null;
  } catch {
    return null;
  }
}

/** CPU milliseconds (user + system) a process has used so far, from /proc (Linux; null elsewhere). */
function cpuMs(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime (fields 14 and 15 of the line) in clock ticks of 1/100 s (USER_HZ).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}

/** Redis's own CPU milliseconds so far (INFO cpu): the server is shared, so others' commands count too. */
async function redisCpuMs(redis: ReturnType<typeof createRedis>): Promise<number | null> {
  const info = await redis.info('cpu').catch(() => '');
  const user = /used_cpu_user:([\d.]+)/.exec(info)?.[1];
  const sys = /used_cpu_sys:([\d.]+)/.exec(info)?.[1];
  return user && sys ? (Number(user) + Number(sys)) * 1000 : null;
}

/** CPU and wall milliseconds of encoding one `size` px stand-in picture as the worker does (median of 15, after a warm-up). */
async function encodeCpuMs(size: number): Promise<{ cpu: number; wall: number; bytes: number }> {
  const image = { width: size, height: size, data: naturalImage(size, size), seed: 0 };
  await encodeImage(image);
  const cpu: number[] = [];
  const wall: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 15; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    bytes = (await encodeImage(image)).bytes.byteLength;
    wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  return { cpu: percentile(cpu, 50), wall: percentile(wall, 50), bytes };
}

/** The whole machine's busy CPU milliseconds so far (all cores, /proc/stat), or null. */
function machineBusyMs(): number | null {
  try {
    const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: everything but idle and iowait, in 1/100 s.
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    return (user + nice + system + irq + softirq + steal) * 10;
  } catch {
    return null;
  }
}

/** CPU milliseconds per job, by who spent them, over one throughput run. */
interface CpuPerJob {
  workers: number;
  api: number;
  notifier: number;
  redis: number;
  /** This process: the clients posting and reading jobs. */
  client: number;
  /** The S3 server's process (s3 runs), else 0. */
  storage: number;
  /** Everything else on the machine (other users' work) per job of this run. */
  others: number;
}

async function waitFor(what: string, proc: Proc | undefined, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && proc.child.exitCode !== null) throw new Error(`${what}: ${proc.name} exited with ${proc.child.exitCode}; see ${proc.log}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs / 1000} s${proc ? `; see ${proc.log}` : ''}`);
    await sleep(100);
  }
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------------------------
// Figures

const percentile = (values: number[], p: number): number => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
};
const ms = (v: number) => (Number.isFinite(v) ? `${v.toFixed(0)}` : '—');

interface ThroughputResult {
  workers: number;
  costMs: number;
  jobs: number;
  failed: number;
  perS: number;
  ratio: number;
  /** Mean run time on the worker minus the pipeline's cost: encoding, upload, bookkeeping. */
  workerOverheadMs: number;
  cpu: CpuPerJob | null;
  /**
   * The most jobs/s this machine's cores could give at the CPU each job took (all processes of
   * the run), ÷ ideal; above 1: the CPU is not the limit.
   */
  cpuCeiling: number | null;
  /** The same with the cores others' processes used during the run taken away. */
  cpuCeilingLeft: number | null;
}

interface StyleResult {
  overhead: number[];
  beyondRun: number[];
  failures: number;
}

const STYLES = ['poll', 'prefer-wait', 'sync', 'sse', 'webhook'] as const;
type Style = (typeof STYLES)[number];
const WAITING_STYLES: Style[] = ['prefer-wait', 'sync', 'sse', 'webhook'];

interface StorageResult {
  storage: string;
  throughput: ThroughputResult[];
  styles: Record<Style, StyleResult>;
  rssWorkerMb: number | null;
}

// ---------------------------------------------------------------------------------------------
// Clients

interface JobTimes {
  startedAt: number;
  finishedAt: number;
  status: string;
}

class Client {
  constructor(
    readonly base: string,
    private readonly hooks: WebhookReceiver,
  ) {}

  body(seed: number, extra: Record<string, unknown> = {}) {
    return JSON.stringify({ prompt: 'a lighthouse at dusk, oil painting', img_size: SIZE, num_inference_steps: STEPS, seed, ...extra });
  }

  async post(seed: number, headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): Promise<{ status: number; job: any }> {
    const res = await fetch(`${this.base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: this.body(seed, extra),
    });
    const job = await res.json();
    return { status: res.status, job };
  }

  async times(id: string): Promise<JobTimes> {
    const job = (await (await fetch(`${this.base}/v1/jobs/${id}`)).json()) as any;
    return { startedAt: Date.parse(job.started_at), finishedAt: Date.parse(job.finished_at), status: job.status };
  }

  /** Runs one job the way `style`'s client does; resolves with its id and when the client had the result. */
  async run(style: Style, seed: number): Promise<{ id: string; doneAt: number }> {
    switch (style) {
      case 'poll': {
        const { job } = await this.post(seed);
        for (;;) {
          await sleep(POLL_MS);
          const view = (await (await fetch(`${this.base}/v1/jobs/${job.id}`)).json()) as any;
          if (['succeeded', 'failed', 'canceled'].includes(view.status)) return { id: job.id, doneAt: now() };
        }
      }
      case 'prefer-wait': {
        const { status, job } = await this.post(seed, { prefer: 'wait=60' });
        if (status !== 201) throw new Error(`Prefer: wait answered ${status}`);
        return { id: job.id, doneAt: now() };
      }
      case 'sync': {
        const query = new URLSearchParams({ prompt: 'a lighthouse at dusk, oil painting', img_size: String(SIZE), num_inference_steps: String(STEPS), seed: String(seed) });
        const res = await fetch(`${this.base}/v1/generate?${query}`);
        const bytes = await res.arrayBuffer();
        if (res.status !== 200 || bytes.byteLength === 0) throw new Error(`sync GET answered ${res.status}`);
        return { id: res.headers.get('x-job-id') as string, doneAt: now() };
      }
      case 'sse': {
        const { job } = await this.post(seed);
        const res = await fetch(`${this.base}/v1/jobs/${job.id}/events`);
        const reader = (res.body as ReadableStream<Uint8Array>).getReader();
        const decoder = new TextDecoder();
        let text = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) throw new Error('the event stream ended without a final event');
          text += decoder.decode(value, { stream: true });
          if (/^event: (succeeded|failed|canceled)$/m.test(text)) {
            const doneAt = now();
            await reader.cancel();
            return { id: job.id, doneAt };
          }
        }
      }
      case 'webhook': {
        const { job } = await this.post(seed, {}, { webhook: { url: this.hooks.url } });
        const doneAt = await this.hooks.finished(job.id);
        return { id: job.id, doneAt };
      }
    }
  }
}

/** Receives the service's webhooks and notes when each job's final one arrived. */
class WebhookReceiver {
  private readonly arrived = new Map<string, number>();
  private readonly waiters = new Map<string, (at: number) => void>();
  private server: http.Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const at = now();
        res.writeHead(204).end();
        try {
          const event = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { type: string; data: { id: string } };
          if (!['job.completed', 'job.failed', 'job.canceled'].includes(event.type)) return;
          const waiter = this.waiters.get(event.data.id);
          if (waiter) {
            this.waiters.delete(event.data.id);
            waiter(at);
          } else this.arrived.set(event.data.id, at);
        } catch {
          // not ours
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks`;
  }

  finished(id: string): Promise<number> {
    const at = this.arrived.get(id);
    if (at !== undefined) return Promise.resolve(at);
    return new Promise((resolve) => this.waiters.set(id, resolve));
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

// ---------------------------------------------------------------------------------------------
// The run

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sd-bench-system-'));
  const logDir = path.join(dir, 'logs');
  fs.mkdirSync(logDir);
  // The API reads its model's capabilities from the export at boot; the workers' stand-in ignores
  // it. Dynamic sizes and no safety checker, like the stand-in.
  await writeTinyModel(path.join(dir, 'model'), { safetyChecker: 'none' });
  const prefix = `bench-sys-${randomUUID().slice(0, 8)}`;
  // The build blocks this process for seconds: it runs before any connection is opened, which
  // would otherwise time out meanwhile.
  let buildS: number | null = null;
  if (RUNTIME === 'compiled') {
    const t0 = performance.now();
    buildServices();
    buildS = (performance.now() - t0) / 1000;
  }
  const redis = createRedis(REDIS_URL, 'worker');
  const hooks = new WebhookReceiver();
  await hooks.start();
  const encodeCpu = await encodeCpuMs(SIZE);
  const loadBefore = os.loadavg();
  const startedAt = Date.now();
  const results: StorageResult[] = [];
  let post: { rps: number; p99: number; ok: number; other: number } | null = null;
  let rssApiMb: number | null = null;
  let s3: Proc | undefined;

  const cleanup = async () => {
    for (const proc of [...running]) proc.child.kill('SIGKILL');
    await hooks.close();
    for (const storage of STORAGES) {
      const own = `${prefix}-${storage}`;
      for (const name of [GENERATE_QUEUE, WEBHOOK_QUEUE]) {
        const queue = new Queue(name, { connection: redis, prefix: own });
        await queue.obliterate({ force: true }).catch(() => undefined);
        await queue.close();
      }
      for await (const keys of redis.scanStream({ match: `${own}:*`, count: 1000 })) {
        if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
      }
    }
    await closeRedis(redis);
    if (process.env['BENCH_KEEP'] === '1') console.log(`kept ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  };
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    console.log('\ninterrupted: stopping the processes and deleting the queue prefix');
    void cleanup().finally(() => process.exit(130));
  });

  try {
    console.log(
      `sd-jobs system benchmark: stand-in pipeline (a timer), ${SIZE} px PNG, ${STEPS} steps; ${os.cpus().length} CPUs; ` +
        `load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}; storage ${STORAGES.join(', ')}`,
    );
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    for (const storage of STORAGES) {
      if (interrupted) return;
      const storageEnv: Record<string, string> = { STORAGE_DRIVER: storage, STORAGE_LOCAL_DIR: path.join(dir, 'images') };
      if (storage === 's3') {
        const endpointFile = path.join(dir, 's3-endpoint');
        s3 ??= startProcess('s3rver', 'bench/s3-server.ts', { S3RVER_DIR: path.join(dir, 's3'), S3RVER_ENDPOINT_FILE: endpointFile }, logDir, { service: false });
        await waitFor('s3rver', s3, async () => fs.existsSync(endpointFile));
        Object.assign(storageEnv, {
          S3_ENDPOINT: fs.readFileSync(endpointFile, 'utf8').trim(),
          S3_BUCKET: 'images',
          S3_CREATE_BUCKET: 'true',
          S3_ACCESS_KEY_ID: 'S3RVER',
          S3_SECRET_ACCESS_KEY: 'S3RVER',
        });
      }
      const port = await freePort();
      const env: Record<string, string> = {
        REDIS_URL,
        QUEUE_PREFIX: `${prefix}-${storage}`,
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'info',
        MODEL_DIR: path.join(dir, 'model'),
        MODEL_NAME: STAND_IN_MODEL,
        WEBHOOK_SECRETS: secret,
        WEBHOOK_ALLOW_HOSTS: '127.0.0.1',
        ...storageEnv,
      };
      const base = `http://127.0.0.1:${port}`;
      const api = startProcess(`api-${storage}`, 'api/main.ts', env, logDir);
      const notifier = startProcess(`notifier-${storage}`, 'notifier/main.ts', env, logDir);
      await waitFor('the API', api, async () => (await fetch(`${base}/readyz`)).status === 200);
      await waitFor('the notifier', notifier, async () => fs.readFileSync(notifier.log, 'utf8').includes('notifier ready'));

      const workerConnection = createRedis(REDIS_URL, 'worker');
      const registry = new WorkerRegistry(workerConnection, env.QUEUE_PREFIX as string);
      const workers: Proc[] = [];
      let workersCost = 0;
      const ensureWorkers = async (count: number, costMs: number) => {
        if (costMs !== workersCost) {
          await Promise.all(workers.splice(0).map((w) => stopProcess(w)));
          workersCost = costMs;
        }
        while (workers.length > count) await stopProcess(workers.pop() as Proc);
        const fresh: string[] = [];
        while (workers.length < count) {
          const id = `bench-${storage}-w${workers.length + 1}-${costMs}ms`;
          workers.push(startProcess(id, 'worker/main.ts', { ...env, WORKER_ID: id, BENCH_PIPELINE_MS: String(costMs) }, logDir, { standIn: true }));
          fresh.push(id);
        }
        await waitFor(`${count} worker(s)`, undefined, async () => {
          for (const w of workers) if (w.child.exitCode !== null) throw new Error(`worker ${w.name} exited; see ${w.log}`);
          const ready = (await registry.list()).filter((r) => fresh.includes(r.id) && r.state === 'ready');
          return ready.length === fresh.length;
        });
      };

      const client = new Client(base, hooks);
      const result: StorageResult = {
        storage,
        throughput: [],
        styles: Object.fromEntries(STYLES.map((s): [Style, StyleResult] => [s, { overhead: [], beyondRun: [], failures: 0 }])) as Record<Style, StyleResult>,
        rssWorkerMb: null,
      };
      results.push(result);

      // Throughput at saturation: every job queued at once, workers never short of work.
      for (const costMs of COSTS) {
        for (const count of WORKERS) {
          if (interrupted) return;
          await ensureWorkers(count, costMs);
          const jobs = Math.max(10 * count, Math.ceil((count * THROUGHPUT_S * 1000) / costMs));
          const ids: string[] = [];
          let next = 0;
          const cpuSnapshot = async () => ({
            api: cpuMs(api.child.pid),
            notifier: cpuMs(notifier.child.pid),
            workers: workers.map((w) => cpuMs(w.child.pid)),
            storage: storage === 's3' ? cpuMs(s3?.child.pid) : 0,
            redis: await redisCpuMs(workerConnection),
            client: process.cpuUsage(),
            machine: machineBusyMs(),
            at: performance.now(),
          });
          const cpuBefore = await cpuSnapshot();
          await Promise.all(
            Array.from({ length: 16 }, async () => {
              while (next < jobs) {
                const seed = next++;
                const { status, job } = await client.post(seed);
                if (status !== 202) throw new Error(`POST /v1/jobs answered ${status}: ${JSON.stringify(job)}`);
                ids.push(job.id);
              }
            }),
          );
          await waitFor('the queue to drain', api, async () => {
            const load = (await (await fetch(`${base}/v1/queue`)).json()) as { load: number };
            return load.load === 0;
          }, Math.max(120_000, jobs * costMs * 10));
          const cpuAfter = await cpuSnapshot();
          const delta = (a: number | null, b: number | null) => (a === null || b === null ? NaN : (b - a) / jobs);
          const clientCpu = process.cpuUsage(cpuBefore.client);
          const cpu: CpuPerJob = {
            workers: cpuAfter.workers.reduce((sum: number, after, i) => sum + delta(cpuBefore.workers[i] ?? null, after), 0),
            api: delta(cpuBefore.api, cpuAfter.api),
            notifier: delta(cpuBefore.notifier, cpuAfter.notifier),
            redis: delta(cpuBefore.redis, cpuAfter.redis),
            client: (clientCpu.user + clientCpu.system) / 1000 / jobs,
            storage: delta(cpuBefore.storage, cpuAfter.storage),
            others: 0,
          };
          const cpuTotal = cpu.workers + cpu.api + cpu.notifier + cpu.redis + cpu.client + cpu.storage;
          cpu.others = Math.max(0, delta(cpuBefore.machine, cpuAfter.machine) - cpuTotal);
          const spanMs = cpuAfter.at - cpuBefore.at;
          const times: JobTimes[] = [];
          for (let i = 0; i < ids.length; i += 32) times.push(...(await Promise.all(ids.slice(i, i + 32).map((id) => client.times(id)))));
          const done = times.filter((t) => t.status === 'succeeded');
          const finishes = done.map((t) => t.finishedAt).sort((a, b) => a - b);
          const lo = Math.floor(finishes.length * 0.1);
          const hi = Math.max(lo + 1, Math.ceil(finishes.length * 0.9) - 1);
          const perS = ((hi - lo) / Math.max(1, finishes[hi]! - finishes[lo]!)) * 1000;
          const runMean = done.reduce((sum, t) => sum + (t.finishedAt - t.startedAt), 0) / Math.max(1, done.length);
          result.throughput.push({
            workers: count,
            costMs,
            jobs,
            failed: times.length - done.length,
            perS,
            ratio: perS / ((count * 1000) / costMs),
            workerOverheadMs: runMean - costMs,
            cpu: Number.isFinite(cpuTotal) ? cpu : null,
            cpuCeiling: Number.isFinite(cpuTotal) ? (os.availableParallelism() * 1000) / cpuTotal / ((count * 1000) / costMs) : null,
            // The cores less what others used meanwhile (their CPU over the run's span).
            cpuCeilingLeft: Number.isFinite(cpuTotal + cpu.others)
              ? ((os.availableParallelism() - (cpu.others * jobs) / spanMs) * 1000) / cpuTotal / ((count * 1000) / costMs)
              : null,
          });
          process.stdout.write(`  ${storage}: ${costMs} ms/image × ${count} worker(s): ${jobs} jobs, ${perS.toFixed(1)}/s\n`);
        }
      }

      // Each client style, one job at a time (no queueing), the styles interleaved so that a
      // neighbour's burst of load spreads over all of them.
      await ensureWorkers(1, WAIT_COST);
      for (const style of STYLES) await client.run(style, 0).catch(() => undefined); // warm each path once
      for (let i = 0; i < WAIT_JOBS; i++) {
        for (const style of STYLES) {
          if (interrupted) return;
          const entry = result.styles[style];
          const t0 = now();
          try {
            const { id, doneAt } = await client.run(style, i + 1);
            const job = await client.times(id);
            if (job.status !== 'succeeded') throw new Error(`job ${id} ${job.status}`);
            entry.overhead.push(doneAt - t0 - WAIT_COST);
            entry.beyondRun.push(doneAt - t0 - (job.finishedAt - job.startedAt));
          } catch (err) {
            entry.failures += 1;
            if (entry.failures === 1) console.log(`  ${storage} ${style}: ${(err as Error).message}`);
          }
        }
      }
      process.stdout.write(`  ${storage}: ${WAIT_JOBS} jobs per client style done\n`);
      result.rssWorkerMb = rssMb(workers[0]?.child.pid);
      await Promise.all(workers.splice(0).map((w) => stopProcess(w)));
      await closeRedis(workerConnection);

      // POST /v1/jobs under load, no workers running (the jobs stay queued): the API alone.
      if (post === null && POST_S > 0) {
        const out = await autocannon({
          url: `${base}/v1/jobs`,
          method: 'POST',
          connections: POST_CONNECTIONS,
          duration: POST_S,
          headers: { 'content-type': 'application/json' },
          body: client.body(1),
        });
        post = { rps: out.requests.average, p99: out.latency.p99, ok: out['2xx'], other: out.non2xx + out.errors };
        rssApiMb = rssMb(api.child.pid);
        process.stdout.write(`  POST /v1/jobs load: ${out['2xx']} answered 2xx\n`);
      }
      await stopProcess(notifier);
      await stopProcess(api);
    }
  } finally {
    if (!interrupted) await cleanup();
  }
  if (interrupted) return;

  // ------------------------------------------------------------------------------------------
  // Report
  const loadAfter = os.loadavg();
  const col = 30;
  const row = (label: string, cells: string[]) => console.log(`  ${label.padEnd(34)}${cells.map((c) => c.padEnd(col)).join('')}`);
  console.log(`\nservices ran ${RUNTIME === 'compiled' ? `compiled (built in ${buildS?.toFixed(1)} s; the API with ${API_NODE_FLAGS.join(' ')})` : 'through tsx'}`);
  console.log(`ran ${((Date.now() - startedAt) / 1000).toFixed(0)} s; load average now ${loadAfter.map((l) => l.toFixed(2)).join(' ')}`);
  console.log('\nthroughput ÷ ideal at saturation (ideal = workers ÷ cost per image); worker overhead = run time − cost');
  row('', results.map((r) => r.storage));
  for (const costMs of COSTS) {
    for (const count of WORKERS) {
      row(
        `${costMs} ms/image, ${count} worker${count > 1 ? 's' : ''}`,
        results.map((r) => {
          const t = r.throughput.find((x) => x.costMs === costMs && x.workers === count);
          return t ? `${t.ratio.toFixed(3)} (${t.perS.toFixed(1)}/s, +${t.workerOverheadMs.toFixed(0)} ms${t.failed ? `, ${t.failed} failed` : ''})` : '—';
        }),
      );
    }
  }
  console.log(
    `\nCPU per job in ms over each throughput run (user + system): workers + API + notifier + Redis + this client + S3 server = total; ` +
      `others (the rest of the machine); then the ceiling on throughput ÷ ideal at that CPU: with all ${os.availableParallelism()} cores / with what others left`,
  );
  for (const r of results) {
    for (const t of r.throughput) {
      const c = t.cpu;
      if (!c) continue;
      const total = c.workers + c.api + c.notifier + c.redis + c.client + c.storage;
      const parts = [c.workers, c.api, c.notifier, c.redis, c.client, c.storage].map((v) => v.toFixed(1)).join(' + ');
      console.log(
        `  ${`${r.storage}, ${t.costMs} ms/image, ${t.workers} worker${t.workers > 1 ? 's' : ''}`.padEnd(34)}${parts} = ${total.toFixed(1)}; others ${c.others.toFixed(1)}; ` +
          `ceiling ${t.cpuCeiling?.toFixed(2)} / ${t.cpuCeilingLeft?.toFixed(2)}`,
      );
    }
  }
  console.log(
    `  ${SIZE} px PNG encode alone (measured here, as the worker encodes): ${encodeCpu.cpu.toFixed(1)} ms CPU, ${encodeCpu.wall.toFixed(1)} ms wall, ${(encodeCpu.bytes / 1024).toFixed(0)} KiB`,
  );
  console.log(`\nper-job overhead in ms, one job at a time at ${WAIT_COST} ms/image: overhead p50/p99 · beyond run p50/p90`);
  row('', results.map((r) => r.storage));
  for (const style of STYLES) {
    const label = style === 'poll' ? `poll (every ${POLL_MS} ms)` : style === 'sync' ? 'sync GET /v1/generate' : style === 'prefer-wait' ? 'POST with Prefer: wait' : style === 'sse' ? 'SSE /events' : 'webhook';
    row(
      label,
      results.map((r) => {
        const s = r.styles[style];
        const text = `${ms(percentile(s.overhead, 50))}/${ms(percentile(s.overhead, 99))} · ${ms(percentile(s.beyondRun, 50))}/${ms(percentile(s.beyondRun, 90))}`;
        return s.failures ? `${text} (${s.failures} failed)` : text;
      }),
    );
  }
  if (post) {
    console.log(`\nPOST /v1/jobs, ${POST_CONNECTIONS} connections, ${POST_S} s: ${post.rps.toFixed(0)} requests/s, p99 ${post.p99.toFixed(1)} ms (${post.ok} 2xx, ${post.other} other)`);
  }
  const fmt = (v: number | null | undefined) => (v === null || v === undefined ? '—' : v.toFixed(0));
  console.log(`RSS after the run: API ${fmt(rssApiMb)} MB (after the POST load); worker ${results.map((r) => `${fmt(r.rssWorkerMb)} MB (${r.storage})`).join(', ')} (stand-in pipeline: no model in memory)`);

  const first = results[0];
  const at = (costMs: number) => first?.throughput.find((t) => t.costMs === costMs && t.workers === Math.max(...WORKERS));
  const ratio = (costMs: number) => at(costMs)?.ratio;
  const worst = (p: number) => Math.max(...WAITING_STYLES.map((s) => percentile(first?.styles[s].beyondRun ?? [], p)).filter(Number.isFinite));
  const summary = {
    throughput_100ms: ratio(100)?.toFixed(3) ?? 'na',
    throughput_20ms: ratio(20)?.toFixed(3) ?? 'na',
    cpu_ceiling_100ms: at(100)?.cpuCeiling?.toFixed(2) ?? 'na',
    cpu_ceiling_20ms: at(20)?.cpuCeiling?.toFixed(2) ?? 'na',
    cpu_left_100ms: at(100)?.cpuCeilingLeft?.toFixed(2) ?? 'na',
    cpu_left_20ms: at(20)?.cpuCeilingLeft?.toFixed(2) ?? 'na',
    wait_p50_ms: Number.isFinite(worst(50)) ? worst(50).toFixed(0) : 'na',
    wait_p90_ms: Number.isFinite(worst(90)) ? worst(90).toFixed(0) : 'na',
    post_rps: post ? post.rps.toFixed(0) : 'na',
    post_p99_ms: post ? post.p99.toFixed(1) : 'na',
    rss_api_mb: rssApiMb === null ? 'na' : rssApiMb.toFixed(0),
    rss_worker_mb: first?.rssWorkerMb == null ? 'na' : first.rssWorkerMb.toFixed(0),
    storage: first?.storage ?? 'na',
    load1: loadAfter[0]?.toFixed(2),
  };
  console.log(`\n${Object.entries(summary).map(([k, v]) => `${k}=${v}`).join(' ')}`);
}

main().catch((err: unknown) => {
  console.error(err);
  for (const proc of [...running]) proc.child.kill('SIGKILL');
  process.exit(1);
});
