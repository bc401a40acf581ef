import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis } from '../../shared/redis.js';
import { deletePrefix, repoRoot, waitFor } from '../helpers/autoscaler.js';
import { startS3Server } from '../helpers/s3-server.js';
import { freePort, startReceiver, type Receiver } from '../helpers/webhook-receiver.js';
import { DEBIAN_IMAGE, docker, ensureBaseImages, ensureDocker, imageExists, NODE_IMAGE, NODE_VERSION, runLogged, type DockerDaemon } from './docker.js';

/**
 * `npm run test:containers`: the Dockerfile's CPU variant built from local bases (no registry) and
 * its roles run as containers on the host's network against the host's Redis (a queue prefix of
 * the test's own) and an S3 server started here: the model-init command writes the tiny model
 * into a folder the containers mount, the API, the autoscaler (spawning its worker inside its
 * container) and the notifier come up healthy by their own health checks, and a job submitted
 * with a webhook ends as a PNG in S3, served back by the API, and as a signed webhook delivered
 * by the notifier container. Skips, saying why, where Docker cannot run.
 */
const id = randomUUID().slice(0, 8);
const prefix = `test-ct-${id}`;
const appImage = 'sdjobs-test/app:cpu';
const log = path.join(repoRoot, 'test-results', 'containers.log');
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-containers-'));
const modelsDir = path.join(workDir, 'models');
const webhookSecret = `whsec_${Buffer.from('containers-test-secret-0123456789').toString('base64')}`;
const containers: string[] = [];
const timings: Record<string, number> = {};

let daemon: DockerDaemon;
let s3: Awaited<ReturnType<typeof startS3Server>> | undefined;
let receiver: Receiver | undefined;
let apiUrl = '';
let env: string[] = [];

fs.mkdirSync(path.dirname(log), { recursive: true });
fs.writeFileSync(log, `container test ${new Date().toISOString()}\n`);
daemon = await ensureDocker(log);
const skip =
  daemon.unavailable ??
  (!(await imageExists(DEBIAN_IMAGE)) && !['/usr/sbin/debootstrap', '/usr/bin/debootstrap'].some((p) => fs.existsSync(p))
    ? 'no debootstrap here to make the Debian base (apt-get install debootstrap)'
    : null);
if (skip) process.stdout.write(`\ncontainer test skipped: ${skip}\n`);

async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await fn();
  } finally {
    timings[name] = (Date.now() - started) / 1000;
  }
}

/** Starts one of the image's roles as a detached container on the host's network. */
async function runRole(role: string, command: string[], extra: string[] = []): Promise<string> {
  const name = `sdjobs-ct-${id}-${role}`;
  await docker(['run', '-d', '--name', name, '--network', 'host', ...env.flatMap((e) => ['-e', e]), ...extra, appImage, ...command]);
  containers.push(name);
  return name;
}

async function healthy(container: string, role: string): Promise<boolean> {
  try {
    await docker(['exec', container, 'node', 'dist/scripts/healthcheck.js', role], { timeoutMs: 20_000 });
    return true;
  } catch {
    return false;
  }
}

async function logsOf(container: string): Promise<string> {
  try {
    const { execFileSync } = await import('node:child_process');
    return execFileSync('docker', ['logs', '--tail', '40', container], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    return String(err);
  }
}

beforeAll(async () => {
  if (skip) return;
  const started = Date.now();
  const built = await timed('bases', () => ensureBaseImages(log));
  await timed('image', () =>
    runLogged(
      'docker',
      ['build', '--network', 'host', '--build-arg', `NODE_IMAGE=${NODE_IMAGE}`, '--build-arg', `RUNTIME_BASE=${DEBIAN_IMAGE}`, '--build-arg', 'ORT_INSTALL=skip', '-t', appImage, '.'],
      log,
      { cwd: repoRoot },
    ),
  );
  timings['build total'] = (Date.now() - started) / 1000;
  process.stdout.write(`\nbases built this run: ${built.length ? built.join(', ') : 'none (cached)'}\n`);

  s3 = await startS3Server();
  receiver = await startReceiver();
  const port = await freePort();
  apiUrl = `http://127.0.0.1:${port}`;
  // The containers run as uid 10001: the models folder must be theirs to write.
  fs.mkdirSync(modelsDir, { mode: 0o777 });
  fs.chmodSync(modelsDir, 0o777);
  env = [
    `REDIS_URL=${process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379'}`,
    `QUEUE_PREFIX=${prefix}`,
    'STORAGE_DRIVER=s3',
    `S3_ENDPOINT=${s3.endpoint}`,
    'S3_BUCKET=images',
    'S3_ACCESS_KEY_ID=S3RVER',
    'S3_SECRET_ACCESS_KEY=S3RVER',
    'S3_FORCE_PATH_STYLE=true',
    'S3_CREATE_BUCKET=true',
    'MODEL_DIR=/models/tiny-sd',
    'MODEL_NAME=tiny-sd',
    'MODEL_AUTO_TINY=false',
    `PORT=${port}`,
    'HOST=127.0.0.1',
    `PUBLIC_URL=${apiUrl}`,
    `WEBHOOK_SECRETS=${webhookSecret}`,
    'WEBHOOK_ALLOW_HOSTS=127.0.0.1',
    'AUTOSCALER_GPUS=none',
    'AUTOSCALER_CPU_SLOTS=1',
    'AUTOSCALER_INTERVAL_MS=200',
    'WORKER_CPU_THREADS=1',
    'WORKER_HEARTBEAT_MS=500',
    'LOG_LEVEL=info',
  ];
  await timed('model-init', () =>
    docker(['run', '--rm', '--network', 'host', '-v', `${modelsDir}:/models`, appImage, 'node', 'dist/scripts/make-tiny-model.js', '--out', '/models/tiny-sd'], { timeoutMs: 300_000 }),
  );
  const mount = ['-v', `${modelsDir}:/models:ro`];
  const bootStarted = Date.now();
  const api = await runRole('api', ['node', 'dist/api/main.js'], mount);
  const autoscaler = await runRole('autoscaler', ['node', 'dist/autoscaler/main.js'], ['--init', ...mount]);
  const notifier = await runRole('notifier', ['node', 'dist/notifier/main.js']);
  for (const [container, role] of [[api, 'api'], [autoscaler, 'autoscaler'], [notifier, 'notifier']] as const) {
    await waitFor(`${role} healthy`, () => healthy(container, role), 120_000, 500).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}\n${await logsOf(container)}`);
    });
  }
  timings['boot to healthy'] = (Date.now() - bootStarted) / 1000;
}, 40 * 60_000);

afterAll(async () => {
  for (const name of containers) await docker(['rm', '-f', name]).catch(() => undefined);
  const redis = createRedis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', 'worker');
  await deletePrefix(redis, prefix).catch(() => undefined);
  redis.disconnect();
  await receiver?.close();
  await s3?.close();
  await daemon.release();
  fs.rmSync(workDir, { recursive: true, force: true });
  if (Object.keys(timings).length > 0) {
    process.stdout.write(`\ncontainer test timings (s): ${Object.entries(timings).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}\n`);
  }
}, 120_000);

describe.skipIf(skip)('the image, built from local bases, serving a job as containers', () => {
  it(`runs Node ${NODE_VERSION} as a non-root user, the compiled services only`, async () => {
    const [api] = containers;
    expect(await docker(['exec', api as string, 'node', '--version'])).toBe(`v${NODE_VERSION}`);
    expect(await docker(['exec', api as string, 'id', '-u'])).toBe('10001');
    const listing = await docker(['exec', api as string, 'ls', '/app']);
    expect(listing.split('\n').sort()).toEqual(['dist', 'node_modules', 'package.json']);
    // The TypeScript runner and the test tools stay in the build stage; only Linux's ONNX Runtime ships.
    expect(await docker(['exec', api as string, 'sh', '-c', 'ls node_modules | grep -c -x -E "tsx|vitest|esbuild|@esbuild" || true'])).toBe('0');
    expect(await docker(['exec', api as string, 'ls', 'node_modules/onnxruntime-node/bin/napi-v6'])).toBe('linux');
  });

  it('runs a job end to end: API → Redis → the autoscaler’s worker → S3 → the API serves the PNG, the notifier delivers the signed webhook', async () => {
    const res = await fetch(`${apiUrl}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', prefer: 'wait=60' },
      body: JSON.stringify({ prompt: 'a containerised fox', img_size: 64, num_inference_steps: 2, seed: 7, webhook: { url: receiver?.url } }),
    });
    const job = (await res.json()) as { id: string; status: string; outputs: { images: { url: string }[] } };
    expect(job.status, await logsOf(containers[1] as string)).toBe('succeeded');

    const png = Buffer.from(await (await fetch(new URL(job.outputs.images[0]?.url as string, apiUrl))).arrayBuffer());
    const meta = await sharp(png).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 64, height: 64 });

    const hook = await waitFor('the webhook', () => receiver?.received.find((h) => JSON.parse(h.body).data?.id === job.id), 60_000, 200);
    const event = new Webhook(webhookSecret).verify(hook.body, hook.headers) as { type: string; data: { status: string } };
    expect(event.data.status).toBe('succeeded');

    // The worker ran inside the autoscaler's container as plain Node on the compiled entry.
    const workers = (await (await fetch(`${apiUrl}/v1/workers`)).json()) as { workers: { pid: number }[] };
    const pid = workers.workers[0]?.pid as number;
    const argv = (await docker(['exec', containers[1] as string, 'cat', `/proc/${pid}/cmdline`])).split('\0').filter(Boolean);
    expect(argv).toEqual(['/usr/local/bin/node', '/app/dist/worker/main.js']);
  });
});
