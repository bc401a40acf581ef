import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { queueView } from '../api/routes/workers.js';
import { CONFIG_VARIABLES, loadConfig } from '../shared/config.js';

/**
 * deploy/kubernetes checked without a cluster: the manifests parse, reference each other by the
 * right names, every variable they set is one the services read and loadConfig accepts, workers
 * ask for one GPU with a grace period covering one job, and KEDA scales them 0…N on the field of
 * GET /v1/queue that really carries the full load.
 */
type Json = Record<string, any>;
const dir = path.resolve(import.meta.dirname, '../deploy/kubernetes');
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'));
const docs: Json[] = files.flatMap((file) =>
  parseAllDocuments(fs.readFileSync(path.join(dir, file), 'utf8')).map((doc) => {
    expect(doc.errors, file).toEqual([]);
    return { ...(doc.toJS() as Json), __file: file };
  }),
);
const find = (kind: string, name: string) => {
  const doc = docs.find((d) => d.kind === kind && d.metadata?.name === name);
  if (!doc) throw new Error(`no ${kind} ${name} in deploy/kubernetes`);
  return doc;
};
const resources = docs.filter((d) => d.kind !== 'Kustomization');
const kustomization = docs.find((d) => d.kind === 'Kustomization') as Json;
const namespace = kustomization.namespace as string;

/** The environment a container starts with: envFrom ConfigMaps/Secrets, then env (fieldRefs as placeholders). */
function containerEnv(container: Json): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const source = from.configMapRef ? find('ConfigMap', from.configMapRef.name).data : find('Secret', from.secretRef.name).stringData;
    Object.assign(env, source);
  }
  for (const entry of container.env ?? []) env[entry.name] = entry.value ?? `from-${Object.keys(entry.valueFrom ?? {})[0]}`;
  return env;
}

const worker = find('Deployment', 'sd-jobs-worker');
const workerContainer = worker.spec.template.spec.containers[0] as Json;
const api = find('Deployment', 'sd-jobs-api');
const apiContainer = api.spec.template.spec.containers[0] as Json;
const apiService = find('Service', 'sd-jobs-api');
const scaled = find('ScaledObject', 'sd-jobs-worker');

describe('deploy/kubernetes', () => {
  it('is one kustomization listing every manifest, all in one namespace', () => {
    expect(new Set(kustomization.resources)).toEqual(new Set(files.filter((f) => f !== 'kustomization.yaml')));
    expect(find('Namespace', namespace)).toBeDefined();
    for (const doc of resources.filter((d) => d.kind !== 'Namespace')) expect(doc.metadata.namespace, `${doc.kind} ${doc.metadata.name}`).toBe(namespace);
  });

  it('has the API Deployment and its Service, Redis, the worker Deployment and the KEDA ScaledObject', () => {
    expect(resources.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual(
      expect.arrayContaining(['Deployment/sd-jobs-api', 'Service/sd-jobs-api', 'StatefulSet/redis', 'Service/redis', 'Deployment/sd-jobs-worker', 'ScaledObject/sd-jobs-worker']),
    );
  });

  it('gives every Service a selector that matches its pods', () => {
    for (const service of resources.filter((d) => d.kind === 'Service')) {
      const pods = resources.filter((d) => ['Deployment', 'StatefulSet'].includes(d.kind) && d.metadata.name === service.metadata.name);
      expect(pods, `pods of Service ${service.metadata.name}`).toHaveLength(1);
      const labels = pods[0]?.spec.template.metadata.labels;
      expect(labels).toMatchObject(service.spec.selector);
      expect(pods[0]?.spec.selector.matchLabels).toEqual(service.spec.selector);
    }
  });

  it('sets only variables the services read, and each process accepts its configuration', () => {
    for (const [name, container] of [['api', apiContainer], ['worker', workerContainer]] as const) {
      const env = containerEnv(container);
      expect(Object.keys(env).filter((k) => !CONFIG_VARIABLES.includes(k)), name).toEqual([]);
      const config = loadConfig(env);
      const redisHost = new URL(config.redisUrl).hostname;
      expect(redisHost, `${name}: Redis is the redis Service`).toBe(`redis.${namespace}.svc`);
      expect(config.storage.driver).toBe('s3');
      expect(config.model.dir.startsWith('/models/')).toBe(true);
    }
    expect(loadConfig(containerEnv(workerContainer)).worker.provider).toBe('cuda');
    expect(find('StatefulSet', 'redis').spec.template.spec.containers[0].args.join(' ')).toMatch(/--appendonly yes.*--maxmemory-policy noeviction/);
  });

  it('runs the API with probes on the port it listens on, behind its Service', () => {
    const config = loadConfig(containerEnv(apiContainer));
    expect(config.host).toBe('0.0.0.0');
    expect(apiContainer.ports[0].containerPort).toBe(config.port);
    expect(apiContainer.readinessProbe.httpGet.path).toBe('/readyz');
    expect(apiContainer.command.join(' ')).toMatch(/api\/main\.ts$/);
    expect(apiService.spec.ports[0].targetPort).toBe(apiContainer.ports[0].name);
  });

  it('runs one worker per GPU pod, with a grace period covering one job, never surging past the GPUs', () => {
    expect(workerContainer.command.join(' ')).toMatch(/worker\/main\.ts$/);
    expect(workerContainer.resources.limits['nvidia.com/gpu']).toBe(1);
    const env = containerEnv(workerContainer);
    expect(env.WORKER_DEVICE_ID).toBe('0');
    // Jobs take up to 30 s; SIGTERM lets the running one finish.
    expect(worker.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(60);
    expect(worker.spec.strategy.rollingUpdate.maxSurge).toBe(0);
    const volumes = worker.spec.template.spec.volumes as Json[];
    expect(volumes.map((v) => v.persistentVolumeClaim.claimName)).toEqual(['sd-jobs-models']);
    expect(find('PersistentVolumeClaim', 'sd-jobs-models')).toBeDefined();
  });

  it('scales the workers 0…N with KEDA on the full job count from GET /v1/queue', () => {
    expect(scaled.apiVersion).toBe('keda.sh/v1alpha1');
    expect(scaled.spec.scaleTargetRef.name).toBe(worker.metadata.name);
    expect(scaled.spec.minReplicaCount).toBe(0);
    expect(scaled.spec.maxReplicaCount).toBeGreaterThanOrEqual(1);
    const [trigger, ...others] = scaled.spec.triggers as Json[];
    expect(others).toEqual([]);
    expect(trigger?.type).toBe('metrics-api');
    const url = new URL(trigger?.metadata.url);
    expect(url.hostname).toBe(`${apiService.metadata.name}.${namespace}.svc`);
    expect(Number(url.port)).toBe(apiService.spec.ports[0].port);
    expect(url.pathname).toBe('/v1/queue');
    // The field KEDA reads is the one the API fills with the full load, not the wait list.
    const sample = queueView({ load: 7, waiting: 1, prioritized: 2, delayedDue: 1, active: 3, delayed: 4, paused: 0, at: 0 });
    expect(trigger?.metadata.valueLocation).toBe('load');
    expect(sample[trigger?.metadata.valueLocation as keyof typeof sample]).toBe(7);
    expect(Number(trigger?.metadata.targetValue)).toBeGreaterThan(0);
    expect(Number(trigger?.metadata.activationTargetValue)).toBe(0);
    // With API keys on, KEDA presents one as a bearer token.
    expect(trigger?.metadata.authMode).toBe('bearer');
    const auth = find('TriggerAuthentication', trigger?.authenticationRef.name);
    const ref = (auth.spec.secretTargetRef as Json[]).find((r) => r.parameter === 'token') as Json;
    expect(find('Secret', ref.name).stringData[ref.key].length).toBeGreaterThanOrEqual(16);
  });
});

describe('deploy/kubernetes-webgpu', () => {
  const overlayDir = path.resolve(import.meta.dirname, '../deploy/kubernetes-webgpu');
  const overlay = parseAllDocuments(fs.readFileSync(path.join(overlayDir, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Json;
  const patches = (overlay.patches as Json[]).map((p) => parseAllDocuments(fs.readFileSync(path.join(overlayDir, p.path), 'utf8'))[0]!.toJS() as Json);

  it('runs the same deployment with webgpu workers that get NVIDIA\'s Vulkan driver', () => {
    expect(overlay.resources).toEqual(['../kubernetes']);
    expect(patches.map((p) => `${p.kind}/${p.metadata.name}`)).toEqual(['Deployment/sd-jobs-worker']);
    const patched = (patches[0]!.spec.template.spec.containers as Json[]).find((c) => c.name === workerContainer.name) as Json;
    // A strategic-merge patch: env entries merge by name.
    const env = containerEnv(workerContainer);
    for (const entry of patched.env as Json[]) env[entry.name] = entry.value;
    expect(env.NVIDIA_DRIVER_CAPABILITIES?.split(',')).toEqual(expect.arrayContaining(['compute', 'utility', 'graphics']));
    // Besides that runtime setting, only variables the worker reads.
    expect(Object.keys(env).filter((k) => !CONFIG_VARIABLES.includes(k))).toEqual(['NVIDIA_DRIVER_CAPABILITIES']);
    const { NVIDIA_DRIVER_CAPABILITIES: _runtime, ...workerEnv } = env;
    expect(loadConfig(workerEnv).worker.provider).toBe('webgpu');
  });

  const kubectl = (() => {
    try {
      execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();
  it.skipIf(!kubectl)(`kubectl kustomize builds it${kubectl ? '' : ' (skipped: no kubectl on this machine)'}`, () => {
    const built = parseAllDocuments(execFileSync('kubectl', ['kustomize', overlayDir], { encoding: 'utf8' })).map((d) => d.toJS() as Json);
    const deployment = built.find((d) => d.kind === 'Deployment' && d.metadata.name === 'sd-jobs-worker') as Json;
    const env = Object.fromEntries((deployment.spec.template.spec.containers[0].env as Json[]).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({ WORKER_PROVIDER: 'webgpu', NVIDIA_DRIVER_CAPABILITIES: 'compute,utility,graphics', WORKER_DEVICE_ID: '0' });
    expect(built.length).toBe(resources.length);
  });
});
