import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { writeTinyModel, type TinyModelOptions } from '../../scripts/tiny-model/index.js';
import { loadPipeline, type Pipeline } from '../../worker/pipeline/index.js';

/**
 * Tiny models in temp folders and pipelines loaded on them (one CPU thread unless told), all
 * released and removed after the file's tests.
 */
export function tinyPipelines(prefix: string) {
  const dirs: string[] = [];
  const pipelines: Pipeline[] = [];
  afterAll(async () => {
    await Promise.allSettled(pipelines.map((p) => p.release()));
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });
  const tempDir = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
  return {
    tempDir,
    async tinyModel(options: TinyModelOptions = {}): Promise<string> {
      const dir = await tempDir();
      await writeTinyModel(dir, options);
      return dir;
    },
    async load(dir: string, options: Parameters<typeof loadPipeline>[1] = {}): Promise<Pipeline> {
      const pipeline = await loadPipeline(dir, { cpuThreads: 1, ...options });
      pipelines.push(pipeline);
      return pipeline;
    },
  };
}
