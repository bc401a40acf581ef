import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { writeTinyModel } from '../scripts/tiny-model/index.js';

/** Writes the tiny random-weight model once per test run; tests read its folder via inject. */
export default async function setup(project: TestProject) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-tiny-'));
  await writeTinyModel(dir);
  project.provide('tinyModelDir', dir);
  return async () => {
    await fs.rm(dir, { recursive: true, force: true });
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    tinyModelDir: string;
  }
}
