import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../shared/config.js';

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
      expect(message).toMatch(/PORT: expected a number/);
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
    expect(() => loadConfig({ WORKER_PROVIDER: 'vulkan' })).toThrow(/WORKER_PROVIDER: .*"cpu"\|"cuda"\|"webgpu"/);
    expect(() => loadConfig({ AUTOSCALER_GPU_PROVIDER: 'rocm' })).toThrow(/AUTOSCALER_GPU_PROVIDER: .*"auto"\|"cuda"\|"webgpu"/);
    expect(() => loadConfig({ WORKER_WEBGPU_LAYOUT: 'nhwc' })).toThrow(/WORKER_WEBGPU_LAYOUT: .*"NHWC"\|"NCHW"/);
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
