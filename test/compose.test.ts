import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CONFIG_VARIABLES, loadConfig } from '../shared/config.js';

/**
 * docker-compose.yml and the Dockerfile, checked without Docker: every service our image runs
 * gets a configuration `loadConfig` accepts (with no .env and with .env.example copied to .env),
 * hosts in URLs are services, volumes are declared, dependencies wait on health checks or on
 * one-shot jobs, the GPU service reserves NVIDIA GPUs, and the image is multi-stage and non-root.
 * Where a Compose v2 binary exists, `docker compose config` must accept the file too.
 */

type Json = Record<string, any>;
const root = path.resolve(import.meta.dirname, '..');
const composeText = fs.readFileSync(path.join(root, 'docker-compose.yml'), 'utf8');
const envExample = fs.readFileSync(path.join(root, '.env.example'), 'utf8');
const dockerfile = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');

/** .env syntax as Compose reads it: KEY=value, `#` comments (inline ones after whitespace). */
function parseDotenv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!match) continue;
    env[match[1] as string] = (match[2] as string).replace(/\s+#.*$/, '').trim();
  }
  return env;
}

/** Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, $$ for a literal $. */
function interpolate(value: unknown, env: Record<string, string>, used: Set<string>): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (whole, name, op, fallback, bare) => {
      if (whole === '$$') return '$';
      const key = (name ?? bare) as string;
      used.add(key);
      const set = env[key];
      if (op === ':-') return set === undefined || set === '' ? (fallback as string) : set;
      if (op === '-') return set === undefined ? (fallback as string) : set;
      return set ?? '';
    });
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, env, used));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, used)]));
  return value;
}

const listEnv = (environment: unknown): Record<string, string> => {
  if (!environment) return {};
  if (Array.isArray(environment)) {
    return Object.fromEntries(environment.map((entry: string) => [entry.split('=')[0], entry.slice(entry.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(environment as Json).map(([k, v]) => [k, v === null || v === undefined ? '' : String(v)]));
};

const SCENARIOS = {
  'no .env file': {} as Record<string, string>,
  '.env copied from .env.example': parseDotenv(envExample),
};

function load(dotenv: Record<string, string>) {
  const used = new Set<string>();
  const compose = interpolate(parse(composeText, { merge: true }), dotenv, used) as Json;
  return { compose, used, services: compose.services as Record<string, Json> };
}

/** The environment a service's container starts with: its env_file (.env, when there is one) under `environment`. */
function containerEnv(service: Json, dotenv: Record<string, string>, haveDotenv: boolean): Record<string, string> {
  const files = (service.env_file ? (Array.isArray(service.env_file) ? service.env_file : [service.env_file]) : []) as (string | Json)[];
  let fromFiles: Record<string, string> = {};
  for (const file of files) {
    const spec = typeof file === 'string' ? { path: file, required: true } : file;
    expect(spec.path).toBe('.env');
    if (haveDotenv) fromFiles = { ...fromFiles, ...dotenv };
    else expect(spec.required, '.env is optional: the stack starts without one').toBe(false);
  }
  return { ...fromFiles, ...listEnv(service.environment) };
}

/** Services that run this repository's image. */
const ownServices = (services: Record<string, Json>) => Object.entries(services).filter(([, s]) => s.build !== undefined);

describe.each(Object.entries(SCENARIOS))('docker-compose.yml with %s', (scenario, dotenv) => {
  const haveDotenv = scenario !== 'no .env file';
  const { compose, services } = load(dotenv);

  it('gives every service of our image a configuration loadConfig accepts, pointing at the compose services', () => {
    const own = ownServices(services);
    expect(own.map(([name]) => name)).toContain('api');
    for (const [name, service] of own) {
      const env = containerEnv(service, dotenv, haveDotenv);
      let config;
      try {
        config = loadConfig(env);
      } catch (err) {
        throw new Error(`service ${name}: ${(err as Error).message}`);
      }
      if (name === 'model-init') continue;
      expect(config.storage.driver, name).toBe('s3');
      expect(new URL(config.redisUrl).hostname, name).toBe('redis');
      if (config.storage.driver === 's3') {
        expect(services[new URL(config.storage.endpoint ?? '').hostname], `${name}: S3 endpoint is a service`).toBeDefined();
        expect(config.storage.bucket).toBe('images');
        expect(config.storage.accessKeyId).toBeTruthy();
      }
      expect(config.model.dir.startsWith('/models/'), name).toBe(true);
    }
  });

  it('publishes the API on the port it listens on, bound to all interfaces in the container, and checks its readiness', () => {
    const api = services.api as Json;
    const config = loadConfig(containerEnv(api, dotenv, haveDotenv));
    expect(config.host).toBe('0.0.0.0');
    const published = (api.ports as string[]).map((p) => String(p));
    expect(published.some((p) => p.endsWith(`:${config.port}`))).toBe(true);
    expect(JSON.stringify(api.healthcheck.test)).toContain(`127.0.0.1:${config.port}/readyz`);
  });

  it('runs Redis durably: AOF fsync every second, noeviction, data on a volume, health-checked', () => {
    const redis = services.redis as Json;
    const command = (redis.command as string[]).join(' ');
    expect(command).toMatch(/--appendonly yes/);
    expect(command).toMatch(/--appendfsync everysec/);
    expect(command).toMatch(/--maxmemory-policy noeviction/);
    expect(redis.volumes).toContainEqual(expect.stringMatching(/^redis-data:\/data$/));
    expect(redis.healthcheck?.test).toBeDefined();
  });

  it('creates the bucket the services use in MinIO before they start', () => {
    const init = services['minio-init'] as Json;
    expect(init.command.join(' ')).toMatch(/mc mb --ignore-existing "local\/\$\{S3_BUCKET\}"/);
    const api = loadConfig(containerEnv(services.api as Json, dotenv, haveDotenv));
    expect(api.storage.driver === 's3' && api.storage.bucket).toBe(listEnv(init.environment).S3_BUCKET);
    expect(init.depends_on.minio.condition).toBe('service_healthy');
    expect(services.minio?.healthcheck?.test).toBeDefined();
    expect((services.minio?.ports as string[]).every((p) => p.startsWith('127.0.0.1:')), 'MinIO stays on this host').toBe(true);
  });

  it('declares every named volume and waits on health checks or finished one-shot jobs', () => {
    const declared = new Set(Object.keys(compose.volumes ?? {}));
    for (const [name, service] of Object.entries(services)) {
      for (const volume of (service.volumes ?? []) as (string | Json)[]) {
        const source = typeof volume === 'string' ? volume.split(':')[0] : volume.source;
        if (source && !source.startsWith('.') && !source.startsWith('/')) expect(declared.has(source), `${name}: volume ${source}`).toBe(true);
      }
      for (const [dependency, spec] of Object.entries((service.depends_on ?? {}) as Record<string, Json>)) {
        const target = services[dependency];
        expect(target, `${name} depends on ${dependency}`).toBeDefined();
        if (spec.condition === 'service_healthy') expect(target?.healthcheck?.test, `${dependency} needs a healthcheck`).toBeDefined();
        else if (spec.condition === 'service_completed_successfully') expect(target?.restart, `${dependency} is one-shot`).toBe('no');
        else throw new Error(`${name} → ${dependency}: wait on a condition, not only on the start`);
      }
    }
    for (const service of ['redis', 'minio', 'api']) expect(services[service]?.healthcheck?.test, service).toBeDefined();
  });

  it('reserves NVIDIA GPUs for the GPU service, which drains before it is stopped', () => {
    const gpu = Object.entries(services).filter(([, s]) =>
      ((s.deploy?.resources?.reservations?.devices ?? []) as Json[]).some((d) => (d.capabilities as string[] | undefined)?.includes('gpu')),
    );
    expect(gpu.length, 'a service with a GPU reservation').toBeGreaterThan(0);
    for (const [name, service] of gpu) {
      const device = (service.deploy.resources.reservations.devices as Json[]).find((d) => d.capabilities.includes('gpu')) as Json;
      expect(device.driver, name).toBe('nvidia');
      expect(device.count === 'all' || Array.isArray(device.device_ids) || typeof device.count === 'number', name).toBe(true);
      expect(service.stop_grace_period, `${name}: time to finish the running job`).toBeDefined();
      expect(service.volumes).toContainEqual(expect.stringMatching(/^models:\/models/));
    }
  });
});

describe('docker-compose.webgpu.yml (AMD and Intel GPUs)', () => {
  const text = fs.readFileSync(path.join(root, 'docker-compose.webgpu.yml'), 'utf8');
  // Compose's `!reset` tag is not YAML's: the parser keeps its value and is told not to warn.
  const override = parse(text, { logLevel: 'error' }) as Json;

  it('gives the autoscaler the GPUs\' render nodes and WebGPU slots instead of the NVIDIA reservation', () => {
    const autoscaler = override.services.autoscaler as Json;
    expect(Object.keys(override.services)).toEqual(['autoscaler']);
    expect(autoscaler.devices).toEqual(['/dev/dri:/dev/dri']);
    expect(text).toMatch(/^\s+deploy: !reset \{\}$/m);
    expect(autoscaler.group_add[0]).toMatch(/^\$\{RENDER_GID:\?/);
    const base = load(parseDotenv(envExample)).services.autoscaler as Json;
    const env = { ...listEnv(base.environment), ...listEnv(autoscaler.environment) };
    expect(loadConfig(env).autoscaler.gpuProvider).toBe('webgpu');
    // NVIDIA GPUs need no override: the base file already asks for the Vulkan driver.
    expect(listEnv(base.environment).NVIDIA_DRIVER_CAPABILITIES?.split(',')).toContain('graphics');
  });
});

describe('variables docker-compose.yml reads', () => {
  it('are service settings from shared/config.ts or compose-only ones documented in .env.example', () => {
    const { used } = load({});
    const documented = new Set([...envExample.matchAll(/^#\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    const unknown = [...used].filter((name) => !CONFIG_VARIABLES.includes(name) && !documented.has(name));
    expect(unknown).toEqual([]);
  });
});

describe('Dockerfile', () => {
  const stages = [...dockerfile.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gim)].map((m) => ({ image: m[1], name: m[2] }));
  const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));

  it('is multi-stage: dependencies are installed in one stage and copied into the runtime', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(finalStage).toMatch(/COPY --from=deps \/app\/node_modules/);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
  });

  it("installs onnxruntime-node's CUDA provider at build time, on a CUDA 12 + cuDNN 9 runtime", () => {
    expect(dockerfile).toMatch(/ARG ORT_INSTALL=cuda12/);
    expect(dockerfile).toMatch(/node_modules\/onnxruntime-node && node \.\/script\/install/);
    expect(dockerfile).toMatch(/ARG RUNTIME_BASE=nvidia\/cuda:12\.[\d.]+-cudnn-runtime-/);
  });

  it('runs as a non-root user', () => {
    const users = [...finalStage.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
    expect(users.length).toBeGreaterThan(0);
    expect(['root', '0', '0:0']).not.toContain(users.at(-1));
  });

  it('keeps secrets and development files out of the build context', () => {
    const ignored = fs.readFileSync(path.join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const entry of ['.env', 'node_modules', '.git', 'models', 'data', 'test']) expect(ignored, entry).toContain(entry);
  });
});

/** A Compose v2 binary (`docker compose` or a v2 `docker-compose`); v1 cannot read this file's syntax. */
function findCompose(): string[] | null {
  for (const command of [['docker', 'compose'], ['docker-compose']]) {
    try {
      const version = execFileSync(command[0] as string, [...command.slice(1), 'version', '--short'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      if (/^v?[2-9]\./.test(version.trim())) return command;
    } catch {
      // not installed
    }
  }
  return null;
}
const compose = findCompose();

it.skipIf(!compose)(`docker compose config accepts the file${compose ? '' : ' (skipped: no Compose v2 binary on this machine)'}`, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-compose-'));
  try {
    const [bin, ...args] = compose as string[];
    const out = execFileSync(bin as string, [...args, '-f', path.join(root, 'docker-compose.yml'), '--project-directory', dir, 'config', '--format', 'json'], {
      encoding: 'utf8',
    });
    const config = JSON.parse(out) as Json;
    expect(Object.keys(config.services)).toContain('api');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
