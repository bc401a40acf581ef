import { describe, expect, it } from 'vitest';
import { ConfigError, EnvSchema, loadConfig } from '../shared/config.js';

describe('loadConfig', () => {
  it('runs on no configuration at all with local defaults', () => {
    const config = loadConfig({});
    expect(config.redisUrl).toBe('redis://127.0.0.1:6379');
    expect(config.storage.driver).toBe('local');
    expect(config.port).toBe(8000);
    expect(config.worker.provider).toBe('cpu');
    expect(config.model.name).toBe('tiny-sd');
  });

  it('is frozen all the way down', () => {
    const config = loadConfig({});
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.limits)).toBe(true);
    expect(() => {
      (config.limits as { maxSteps: number }).maxSteps = 1;
    }).toThrow(TypeError);
  });

  it('names every bad variable and what was expected', () => {
    try {
      loadConfig({ PORT: 'eighty', STORAGE_DRIVER: 'ftp', WORKER_ALLOW_CPU_FALLBACK: 'maybe' });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const message = (err as ConfigError).message;
      expect(message).toMatch(/PORT: expected a whole number from 0 to 65535/);
      expect(message).toMatch(/STORAGE_DRIVER/);
      expect(message).toMatch(/WORKER_ALLOW_CPU_FALLBACK: expected true or false/);
      expect((err as ConfigError).problems).toHaveLength(3);
    }
  });

  it('checks settings that depend on each other', () => {
    expect(() => loadConfig({ STORAGE_DRIVER: 's3' })).toThrow(/S3_BUCKET: required when STORAGE_DRIVER=s3/);
    expect(() => loadConfig({ MIN_IMAGE_SIZE: '512', MAX_IMAGE_SIZE: '256' })).toThrow(/MIN_IMAGE_SIZE/);
    expect(() => loadConfig({ S3_ACCESS_KEY_ID: 'a' })).toThrow(/S3_SECRET_ACCESS_KEY/);
  });

  it('reads the WebGPU settings and names a provider it does not know', () => {
    const config = loadConfig({ WORKER_PROVIDER: 'webgpu', WORKER_WEBGPU_LAYOUT: 'NCHW', AUTOSCALER_GPU_PROVIDER: 'webgpu' });
    expect(config.worker).toMatchObject({ provider: 'webgpu', webgpuLayout: 'NCHW' });
    expect(config.autoscaler.gpuProvider).toBe('webgpu');
    expect(loadConfig({}).worker.webgpuLayout).toBe('NHWC');
    expect(loadConfig({}).autoscaler.gpuProvider).toBe('auto');
    expect(() => loadConfig({ WORKER_PROVIDER: 'vulkan' })).toThrow(/WORKER_PROVIDER: expected one of cpu, cuda, webgpu/);
    expect(() => loadConfig({ AUTOSCALER_GPU_PROVIDER: 'rocm' })).toThrow(/AUTOSCALER_GPU_PROVIDER: expected one of auto, cuda, webgpu/);
    expect(() => loadConfig({ WORKER_WEBGPU_LAYOUT: 'nhwc' })).toThrow(/WORKER_WEBGPU_LAYOUT: expected one of NHWC, NCHW/);
  });

  it('reads S3 settings', () => {
    const config = loadConfig({ STORAGE_DRIVER: 's3', S3_BUCKET: 'imgs', S3_ENDPOINT: 'http://minio:9000', S3_CREATE_BUCKET: 'true' });
    expect(config.storage).toMatchObject({ driver: 's3', bucket: 'imgs', endpoint: 'http://minio:9000', forcePathStyle: true, createBucket: true });
  });
});

describe('.env.example', () => {
  it('lists every variable the schema reads', async () => {
    const { CONFIG_VARIABLES } = await import('../shared/config.js');
    const { readFile } = await import('node:fs/promises');
    const text = await readFile(new URL('../.env.example', import.meta.url), 'utf8');
    const listed = new Set([...text.matchAll(/^([A-Z0-9_]+)=/gm)].map((m) => m[1]));
    expect(CONFIG_VARIABLES.filter((name) => !listed.has(name))).toEqual([]);
    expect([...listed].filter((name) => !CONFIG_VARIABLES.includes(name as string))).toEqual([]);
  });
});

/**
 * Every numeric, enumerated or formatted variable says what it accepts when it is wrong: the
 * range (both ends), the choices, or the form. Walks the schema itself, so a variable added later
 * is checked too.
 */
describe('config errors state the accepted range or form', () => {
  type Leaf = { kind: 'number'; min: number; max: number; int: boolean } | { kind: 'enum'; options: string[] } | { kind: 'string' } | { kind: 'other' };

  /** The schema a variable's value is finally checked against, through defaults, pipes and preprocessors. */
  function leafOf(schema: any): Leaf {
    const def = schema?._zod?.def;
    switch (def?.type) {
      case 'default':
      case 'optional':
      case 'nullable':
        return leafOf(def.innerType);
      case 'pipe': {
        const out = leafOf(def.out);
        return out.kind === 'other' ? leafOf(def.in) : out;
      }
      case 'number':
        return { kind: 'number', min: schema.minValue, max: schema.maxValue, int: schema.isInt };
      case 'enum':
        return { kind: 'enum', options: schema.options };
      case 'string':
        return { kind: 'string' };
      default:
        return { kind: 'other' };
    }
  }

  const problemFor = (name: string, value: string): string | null => {
    try {
      loadConfig({ [name]: value });
      return null;
    } catch (err) {
      const problems = (err as ConfigError).problems ?? [];
      return problems.find((p) => p.startsWith(`${name}:`)) ?? null;
    }
  };

  const shape = Object.entries((EnvSchema as any).shape) as [string, unknown][];
  const numeric = shape.map(([name, schema]) => [name, leafOf(schema)] as const).filter(([, leaf]) => leaf.kind === 'number');
  const enums = shape.map(([name, schema]) => [name, leafOf(schema)] as const).filter(([, leaf]) => leaf.kind === 'enum');

  it('walks a schema with numbers and enumerations in it', () => {
    expect(numeric.length).toBeGreaterThanOrEqual(40);
    expect(enums.map(([name]) => name)).toEqual(expect.arrayContaining(['LOG_LEVEL', 'STORAGE_DRIVER', 'WORKER_PROVIDER', 'METRICS_ENABLED']));
  });

  it.each(numeric.map(([name, leaf]) => [name, leaf]))('%s names its range for a value out of it, a fraction and a word', (name, leaf) => {
    if (leaf.kind !== 'number') throw new Error('not numeric');
    const bounded = leaf.max < Number.MAX_SAFE_INTEGER;
    const bad = ['many', String(leaf.min - 1)];
    if (bounded) bad.push(String(leaf.max + 1));
    if (leaf.int) bad.push(String(leaf.min + 0.5));
    for (const value of bad) {
      const problem = problemFor(name, value);
      expect(problem, `${name}=${value} should be refused`).not.toBeNull();
      expect(problem).toContain(leaf.int ? 'whole number' : 'number');
      expect(problem).toContain(bounded ? `from ${leaf.min} to ${leaf.max}` : `${leaf.min} or more`);
      expect(problem).toContain(`(got ${JSON.stringify(value)})`);
    }
  });

  it.each(enums.map(([name, leaf]) => [name, leaf]))('%s lists its choices', (name, leaf) => {
    if (leaf.kind !== 'enum') throw new Error('not an enumeration');
    const problem = problemFor(name, 'no-such-choice');
    expect(problem).not.toBeNull();
    for (const option of leaf.options) expect(problem).toMatch(new RegExp(`\\b${option}\\b`));
  });

  it('says what form a formatted string takes', () => {
    expect(problemFor('REDIS_URL', 'http://x')).toMatch(/expected redis:\/\/host:port/);
    expect(problemFor('QUEUE_PREFIX', 'a b')).toMatch(/expected letters, digits/);
    expect(problemFor('AUTOSCALER_GPUS', 'gpu0')).toMatch(/expected none or GPU indices/);
    expect(problemFor('PUBLIC_URL', 'not a url')).toMatch(/expected an absolute http\(s\) URL/);
  });

  it('AUTOSCALER_MAX_WORKERS=0 says the range, not "expected a number"', () => {
    expect(problemFor('AUTOSCALER_MAX_WORKERS', '0')).toBe('AUTOSCALER_MAX_WORKERS: expected a whole number from 1 to 1024 (got "0")');
  });
});
