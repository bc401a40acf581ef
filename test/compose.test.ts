import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { API_NODE_FLAGS } from '../api/node-flags.js';
import { CONFIG_VARIABLES, loadConfig } from '../shared/config.js';

/**
 * docker-compose.yml and the Dockerfile, checked without Docker: the file validates against the
 * Compose Specification's JSON schema (vendored, test/schemas/README.md) before and after
 * interpolation; every service our image runs gets a configuration `loadConfig` accepts (with no
 * .env and with .env.example copied to .env), runs the compiled services from the one image that
 * one service builds, hosts in URLs are services, volumes are declared, every long-running service
 * has a health check and dependencies wait on them or on one-shot jobs, third-party images are
 * pinned, the gpu profile reserves NVIDIA GPUs and the cpu profile needs none, and the image is
 * multi-stage, non-root, on a Node LTS. Where a Compose v2 binary exists, `docker compose config`
 * must accept the file too.
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

/** Services that run this repository's image: the one that builds it and those that use it by name. */
const ownServices = (services: Record<string, Json>) => {
  const image = Object.values(services).find((s) => s.build !== undefined)?.image as string;
  return Object.entries(services).filter(([, s]) => s.image === image);
};

const composeSchema = JSON.parse(fs.readFileSync(path.join(root, 'test/schemas/compose-spec/compose-spec.json'), 'utf8')) as Json;
// Draft 07 (Ajv's default), named by an https URL Ajv does not know: the name is dropped.
const validateCompose = new Ajv({ strict: false, allErrors: true }).compile({ ...composeSchema, $schema: undefined });
const schemaErrors = (doc: unknown) => (validateCompose(doc) ? [] : (validateCompose.errors ?? []).map((e) => `${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`));

describe('docker-compose.yml against the Compose Specification schema', () => {
  it('validates as written (YAML merge keys applied)', () => {
    expect(schemaErrors(parse(composeText, { merge: true }))).toEqual([]);
  });

  it('rejects a misspelt service field and a wrong type (the check can fail)', () => {
    const broken = parse(composeText, { merge: true }) as Json;
    broken.services.api.healtcheck = broken.services.api.healthcheck;
    expect(schemaErrors(broken).join()).toMatch(/healtcheck/);
    const wrongType = parse(composeText, { merge: true }) as Json;
    wrongType.services.redis.restart = ['always'];
    expect(schemaErrors(wrongType).join()).toMatch(/restart/);
  });
});

describe.each(Object.entries(SCENARIOS))('docker-compose.yml with %s', (scenario, dotenv) => {
  const haveDotenv = scenario !== 'no .env file';
  const { compose, services } = load(dotenv);

  it('validates against the Compose Specification schema once interpolated', () => {
    expect(schemaErrors(compose)).toEqual([]);
  });

  it('builds our image once: one service builds it, the others run it by name, all on compiled JavaScript', () => {
    const builders = Object.entries(services).filter(([, s]) => s.build !== undefined);
    expect(builders.map(([name]) => name)).toEqual(['api']);
    const own = ownServices(services);
    expect(own.map(([name]) => name).sort()).toEqual(['api', 'autoscaler-cpu', 'autoscaler-gpu', 'model-init', 'notifier']);
    for (const [name, service] of own) {
      const command = (service.command as string[]).join(' ');
      expect(command, name).toMatch(/node (?:--[a-z-]+=\d+ )*dist\/[a-z-/]+\.js/);
      expect(command, name).not.toMatch(/tsx/);
      // The API with the flags it is measured with (api/node-flags.ts).
      if (command.endsWith('api/main.js')) expect(command, name).toBe(['node', ...API_NODE_FLAGS, 'dist/api/main.js'].join(' '));
    }
  });

  it('pins every third-party image to a version', () => {
    const own = new Set(ownServices(services).map(([name]) => name));
    for (const [name, service] of Object.entries(services).filter(([n]) => !own.has(n))) {
      expect(service.image, name).toMatch(/^[\w./-]+:\d[\w.-]*$/);
    }
  });

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
    // The health check asks /readyz on the port the API reads from the same environment.
    expect(api.healthcheck.test).toEqual(['CMD', 'node', 'dist/scripts/healthcheck.js', 'api']);
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

  it('runs the S3 store with the services’ own keys, health-checked, off the host, the bucket made before any worker uploads', () => {
    const store = services.s3 as Json;
    const api = loadConfig(containerEnv(services.api as Json, dotenv, haveDotenv));
    if (api.storage.driver !== 's3') throw new Error('the API stores in S3');
    const identity = listEnv(store.environment);
    expect(identity.AWS_ACCESS_KEY_ID).toBe(api.storage.accessKeyId);
    expect(identity.AWS_SECRET_ACCESS_KEY).toBe(api.storage.secretAccessKey);
    expect(new URL(api.storage.endpoint ?? '').port).toBe('8333');
    expect(store.healthcheck?.test.join(' ')).toMatch(/127\.0\.0\.1:8333\/healthz/);
    expect(store.ports, 'the S3 store is reached through the API only').toBeUndefined();
    expect(store.volumes).toContainEqual('s3-data:/data');
    // The bucket is made on first use; the API checks it (readiness) before the autoscalers start workers.
    expect(api.storage.createBucket).toBe(true);
    expect((services.api as Json).depends_on.s3.condition).toBe('service_healthy');
    for (const name of ['autoscaler-gpu', 'autoscaler-cpu']) expect(services[name]?.depends_on.api.condition, name).toBe('service_healthy');
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
    for (const [name, service] of Object.entries(services)) {
      if (service.restart === 'no') continue;
      expect(service.healthcheck?.test, `${name} is long-running: it needs a healthcheck`).toBeDefined();
    }
    for (const role of ['api', 'notifier']) expect(services[role]?.healthcheck.test).toEqual(['CMD', 'node', 'dist/scripts/healthcheck.js', role]);
    for (const name of ['autoscaler-gpu', 'autoscaler-cpu']) expect(services[name]?.healthcheck.test).toEqual(['CMD', 'node', 'dist/scripts/healthcheck.js', 'autoscaler']);
  });

  it('reserves NVIDIA GPUs in the gpu profile only, and drains workers within a grace period that covers a job', () => {
    const reserves = (s: Json) => ((s.deploy?.resources?.reservations?.devices ?? []) as Json[]).some((d) => (d.capabilities as string[] | undefined)?.includes('gpu'));
    const gpu = Object.entries(services).filter(([, s]) => reserves(s));
    expect(gpu.map(([name]) => name)).toEqual(['autoscaler-gpu']);
    expect(services['autoscaler-gpu']?.profiles).toEqual(['gpu']);
    expect(services['autoscaler-cpu']?.profiles).toEqual(['cpu']);
    // Whatever runs without a profile, or in the cpu profile, starts on a host without the NVIDIA runtime.
    for (const [name, service] of Object.entries(services)) if (!service.profiles?.includes('gpu')) expect(reserves(service), name).toBe(false);
    const device = (services['autoscaler-gpu']?.deploy.resources.reservations.devices as Json[])[0] as Json;
    expect(device.driver).toBe('nvidia');
    expect(device.count === 'all' || Array.isArray(device.device_ids) || typeof device.count === 'number').toBe(true);
    expect(loadConfig(containerEnv(services['autoscaler-gpu'] as Json, dotenv, haveDotenv)).worker.provider).toBe('cuda');
    expect(loadConfig(containerEnv(services['autoscaler-cpu'] as Json, dotenv, haveDotenv)).autoscaler.gpus).toBe('none');
    for (const name of ['autoscaler-gpu', 'autoscaler-cpu']) {
      const service = services[name] as Json;
      const config = loadConfig(containerEnv(service, dotenv, haveDotenv));
      // A job runs at most JOB_MAX_RUN_S; the autoscaler waits longer before SIGKILL; compose longer still.
      expect(config.autoscaler.stopGraceS, name).toBeGreaterThanOrEqual(config.jobs.maxRunS + 10);
      expect(durationS(service.stop_grace_period), name).toBeGreaterThanOrEqual(config.autoscaler.stopGraceS + 10);
      expect(service.volumes).toContainEqual(expect.stringMatching(/^models:\/models:ro$/));
    }
  });
});

describe('docker-compose.webgpu.yml (AMD and Intel GPUs)', () => {
  const text = fs.readFileSync(path.join(root, 'docker-compose.webgpu.yml'), 'utf8');
  // Compose's `!reset` tag is not YAML's: the parser keeps its value and is told not to warn.
  const override = parse(text, { logLevel: 'error' }) as Json;

  it('gives the autoscaler the GPUs\' render nodes and WebGPU slots instead of the NVIDIA reservation', () => {
    const autoscaler = override.services['autoscaler-gpu'] as Json;
    expect(Object.keys(override.services)).toEqual(['autoscaler-gpu']);
    expect(autoscaler.devices).toEqual(['/dev/dri:/dev/dri']);
    expect(text).toMatch(/^\s+deploy: !reset \{\}$/m);
    expect(autoscaler.group_add[0]).toMatch(/^\$\{RENDER_GID:\?/);
    const base = load(parseDotenv(envExample)).services['autoscaler-gpu'] as Json;
    const env = { ...listEnv(base.environment), ...listEnv(autoscaler.environment) };
    expect(loadConfig(env).autoscaler.gpuProvider).toBe('webgpu');
    // NVIDIA GPUs need no override: the base file already asks for the Vulkan driver.
    expect(listEnv(base.environment).NVIDIA_DRIVER_CAPABILITIES?.split(',')).toContain('graphics');
  });
});

/** A compose duration (1m30s, 11m, 90s) in seconds. */
function durationS(value: string): number {
  let total = 0;
  for (const [, n, unit] of value.matchAll(/(\d+)(h|m|s)/g)) total += Number(n) * { h: 3600, m: 60, s: 1 }[unit as 'h' | 'm' | 's'];
  return total;
}

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
  const arg = (name: string) => new RegExp(`^ARG ${name}=(\\S+)`, 'm').exec(dockerfile)?.[1];

  it('is multi-stage: compiled in one stage, production dependencies in another, both copied into the runtime', () => {
    expect(stages.map((s) => s.name)).toEqual(['node', 'build', 'deps', 'runtime']);
    expect(dockerfile).toMatch(/RUN npm run build/);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(finalStage).toMatch(/COPY --from=deps \/app\/node_modules/);
    expect(finalStage).toMatch(/COPY --from=build \/app\/dist \.\/dist/);
    expect(finalStage).toContain(`CMD ${JSON.stringify(['node', ...API_NODE_FLAGS, 'dist/api/main.js']).replaceAll(',', ', ')}`);
    expect(dockerfile.replace(/^#.*$/gm, ''), 'no tsx at run time').not.toMatch(/tsx/);
  });

  it('runs a supported Node LTS, and takes its bases as build arguments (so local images can stand in)', () => {
    expect(arg('NODE_IMAGE')).toMatch(/^node:(22|24)-/);
    for (const stage of stages) expect(stage.image, stage.name).toMatch(/^\$\{(NODE_IMAGE|RUNTIME_BASE)\}$/);
    // A `# syntax=` line would make BuildKit pull a frontend image: no offline build then.
    expect(dockerfile).not.toMatch(/^# *syntax=/m);
  });

  it("installs onnxruntime-node's CUDA provider at build time, on a CUDA 12 + cuDNN 9 runtime", () => {
    expect(arg('ORT_INSTALL')).toBe('cuda12');
    expect(dockerfile).toMatch(/node_modules\/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL="\$ORT_INSTALL" node \.\/script\/install/);
    expect(arg('RUNTIME_BASE')).toMatch(/^nvidia\/cuda:12\.[\d.]+-cudnn-runtime-/);
  });

  it('runs as a non-root user', () => {
    const users = [...finalStage.matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
    expect(users.length).toBeGreaterThan(0);
    expect(['root', '0', '0:0']).not.toContain(users.at(-1));
  });

  it('keeps secrets, builds and development files out of the build context', () => {
    const ignored = fs.readFileSync(path.join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const entry of ['.env', 'node_modules', '.git', 'models', 'data', 'test', 'dist']) expect(ignored, entry).toContain(entry);
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
