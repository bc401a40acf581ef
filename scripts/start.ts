import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApi } from '../api/server.js';
import { ConfigError, loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { TINY_MODEL_NOTE, writeTinyModel } from './tiny-model/index.js';

/**
 * `npm start`: the whole service on one machine. The API runs here; the worker runs as a child
 * process (it owns the model and, on a GPU host, the GPU).
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const logger = createLogger('start', config.logLevel);

  if (!fs.existsSync(path.join(config.model.dir, 'model_index.json'))) {
    if (!config.model.autoTiny) {
      logger.fatal({ modelDir: config.model.dir }, 'MODEL_DIR holds no model_index.json; point it at an ONNX export');
      process.exit(3);
    }
    logger.warn({ modelDir: config.model.dir }, `no model found: writing the tiny random-weight test model. ${TINY_MODEL_NOTE}`);
    await writeTinyModel(config.model.dir);
  }

  const api = await startApi(config, createLogger('api', config.logLevel));
  let worker: ChildProcess | undefined;
  let stopping = false;
  let restarts = 0;
  const startWorker = () => {
    worker = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'worker/main.ts')], {
      cwd: root,
      env: { ...process.env, WORKER_ID: process.env.WORKER_ID ?? 'local-0' },
      stdio: 'inherit',
    });
    worker.on('exit', (code, signal) => {
      if (stopping) return;
      restarts += 1;
      const delay = Math.min(30_000, 1000 * 2 ** Math.min(restarts, 5));
      logger.error({ code, signal, restartInMs: delay }, 'worker exited; restarting');
      setTimeout(startWorker, delay).unref();
    });
  };
  startWorker();

  logger.info(
    { url: api.url },
    `ready: POST ${api.url}/v1/jobs  ·  GET ${api.url}/v1/generate?prompt=a+red+fox  ·  GET ${api.url}/dreambooth?prompt=a+red+fox&img_size=64`,
  );

  const stop = () => {
    if (stopping) {
      worker?.kill('SIGKILL');
      process.exit(130);
    }
    stopping = true;
    logger.info('stopping: the worker finishes its current job first (signal again to force)');
    const exited = worker && worker.exitCode === null ? new Promise((resolve) => worker?.once('exit', resolve)) : Promise.resolve();
    worker?.kill('SIGTERM');
    void Promise.all([exited, api.close()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

void main();
