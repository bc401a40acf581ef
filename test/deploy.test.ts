import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { queueView } from '../api/routes/workers.js';
import { configuredJobMaxRunS, DRAIN_SLACK_S, renderCatalogue, renderWorker } from '../scripts/k8s-worker.js';
import { API_NODE_FLAGS } from '../api/node-flags.js';
import { CONFIG_VARIABLES, loadConfig } from '../shared/config.js';
import { KEDA_VERSION, KUBERNETES_VERSION, loadManifestValidators } from './helpers/k8s-schemas.js';

/**
 * deploy/kubernetes checked without a cluster: every manifest validates against the Kubernetes
 * 1.36 schemas (KEDA 2.20's for its objects), strictly; and the manifests fit together: names
 * referenced exist, every variable set is one the services read and loadConfig accepts, the
 * containers run the compiled services, one process owns the queue metrics, each served model has
 * a worker Deployment rendered from the template with a grace period derived from JOB_MAX_RUN_S,
 * and KEDA scales it 0…N on the field of GET /v1/queue that carries the full load.
 */
type Json = Record<string, any>;
const dir = path.resolve(import.meta.dirname, '../deploy/kubernetes');
const files = (fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }) as string[]).filter((f) => f.endsWith('.yaml')).sort();
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
const workloads = resources.filter((d) => ['Deployment', 'StatefulSet', 'Job'].includes(d.kind));
const ownContainers = workloads.flatMap((w) => (w.spec.template.spec.containers as Json[]).filter((c) => c.image.startsWith('sd-jobs')).map((c) => ({ workload: w, container: c })));
const withoutFile = ({ __file: _file, ...doc }: Json) => doc;

/** The environment a container starts with: envFrom ConfigMaps/Secrets, then env (fieldRefs as placeholders). */
function containerEnv(container: Json): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const source = from.configMapRef ? find('ConfigMap', from.configMapRef.name).data : find('Secret', from.secretRef.name).stringData;
    Object.assign(env, source);
  }
  for (const entry of container.env ?? []) {
    const ref = entry.valueFrom?.secretKeyRef;
    env[entry.name] = entry.value ?? (ref ? find('Secret', ref.name).stringData[ref.key] : `from-${Object.keys(entry.valueFrom ?? {})[0]}`);
  }
  return env;
}

const config = find('ConfigMap', 'sd-jobs-config').data as Record<string, string>;
// The served models: the catalogue (models.json) rendered into the sd-jobs-models ConfigMap.
const catalogueText = fs.readFileSync(path.join(dir, 'models.json'), 'utf8');
const servedModels = (JSON.parse(find('ConfigMap', 'sd-jobs-models').data.MODELS_JSON as string) as { models: { name: string }[] }).models.map((m) => m.name);
const servedModel = servedModels[0] as string;
const api = find('Deployment', 'sd-jobs-api');
const apiContainer = api.spec.template.spec.containers[0] as Json;
const apiService = find('Service', 'sd-jobs-api');
const workerDeployments = resources.filter((d) => d.kind === 'Deployment' && d.metadata.labels?.['app.kubernetes.io/name'] === 'sd-jobs-worker');

describe(`deploy/kubernetes against the Kubernetes ${KUBERNETES_VERSION} and KEDA ${KEDA_VERSION} schemas`, () => {
  const validate = loadManifestValidators();

  it('validates every manifest', () => {
    expect(resources.length).toBeGreaterThan(10);
    for (const doc of resources) expect(validate(withoutFile(doc)).errors, `${doc.__file}: ${doc.kind} ${doc.metadata?.name}`).toEqual([]);
  });

  it('rejects a misspelt field, a wrong type and an unknown kind (the check can fail)', () => {
    const broken = structuredClone(withoutFile(api));
    broken.spec.template.spec.containers[0].imagePullPolicyy = 'Always';
    expect(validate(broken).errors.join()).toMatch(/imagePullPolicyy/);
    const wrongType = structuredClone(withoutFile(api));
    wrongType.spec.replicas = 'two';
    expect(validate(wrongType).errors.join()).toMatch(/replicas/);
    const scaled = structuredClone(withoutFile(find('ScaledObject', `sd-jobs-worker-${servedModel}`)));
    scaled.spec.minReplicas = 0;
    expect(validate(scaled).errors.join()).toMatch(/minReplicas/);
    expect(validate({ apiVersion: 'example.com/v1', kind: 'Thing' }).errors).toEqual(['no schema for example.com/v1/Thing']);
  });
});

describe('deploy/kubernetes', () => {
  it('is one kustomization listing every manifest, all in one namespace', () => {
    expect(new Set(kustomization.resources)).toEqual(new Set(files.filter((f) => f !== 'kustomization.yaml')));
    expect(find('Namespace', namespace)).toBeDefined();
    for (const doc of resources.filter((d) => d.kind !== 'Namespace')) expect(doc.metadata.namespace, `${doc.kind} ${doc.metadata.name}`).toBe(namespace);
  });

  it('has the API and its Service, the metrics owner, the notifier, Redis, the S3 store and the served model’s workers', () => {
    expect(resources.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual(
      expect.arrayContaining([
        'Deployment/sd-jobs-api',
        'Service/sd-jobs-api',
        'Deployment/sd-jobs-metrics',
        'Service/sd-jobs-metrics',
        'Deployment/sd-jobs-notifier',
        'StatefulSet/redis',
        'Service/redis',
        'StatefulSet/s3',
        'Service/s3',
        `Deployment/sd-jobs-worker-${servedModel}`,
        `ScaledObject/sd-jobs-worker-${servedModel}`,
      ]),
    );
  });

  it('gives every Service a selector that matches exactly one workload, on a port it names', () => {
    for (const service of resources.filter((d) => d.kind === 'Service')) {
      const matching = workloads.filter((w) => Object.entries(service.spec.selector).every(([k, v]) => w.spec.template.metadata.labels[k] === v));
      expect(matching.map((w) => w.metadata.name), `pods of Service ${service.metadata.name}`).toHaveLength(1);
      const ports = (matching[0]?.spec.template.spec.containers as Json[]).flatMap((c) => (c.ports ?? []).map((p: Json) => p.name));
      for (const port of service.spec.ports as Json[]) expect(ports, `${service.metadata.name}:${port.targetPort}`).toContain(port.targetPort);
    }
    for (const workload of workloads.filter((w) => w.kind !== 'Job')) expect(workload.spec.template.metadata.labels).toMatchObject(workload.spec.selector.matchLabels);
  });

  it('sets only variables the services read, and each container of our image accepts its configuration', () => {
    expect(ownContainers.length).toBeGreaterThanOrEqual(4);
    for (const { workload, container } of ownContainers) {
      const name = workload.metadata.name as string;
      const env = containerEnv(container);
      expect(Object.keys(env).filter((k) => !CONFIG_VARIABLES.includes(k)), name).toEqual([]);
      const loaded = loadConfig(env);
      expect(new URL(loaded.redisUrl).hostname, `${name}: Redis is the redis Service`).toBe(`redis.${namespace}.svc`);
      expect(loaded.storage.driver).toBe('s3');
      if (loaded.storage.driver === 's3') {
        const endpoint = new URL(loaded.storage.endpoint ?? '');
        expect(endpoint.hostname, `${name}: S3 is the s3 Service`).toBe(`s3.${namespace}.svc`);
        expect(Number(endpoint.port)).toBe(find('Service', 's3').spec.ports[0].port);
      }
      expect(loaded.model.dir.startsWith('/models/')).toBe(true);
    }
    expect(find('StatefulSet', 'redis').spec.template.spec.containers[0].args.join(' ')).toMatch(/--appendonly yes.*--maxmemory-policy noeviction/);
  });

  it('runs the compiled services as a non-root user, and pins every other image', () => {
    for (const { workload, container } of ownContainers) {
      const command = (container.command as string[]).join(' ');
      expect(command, workload.metadata.name).toMatch(/^node (?:--[a-z-]+=\d+ )*dist\/(api|worker|notifier|autoscaler)\/main\.js$/);
      // The API with the flags it is measured with (api/node-flags.ts).
      if (command.endsWith('api/main.js')) expect(command, workload.metadata.name).toBe(['node', ...API_NODE_FLAGS, 'dist/api/main.js'].join(' '));
      expect(workload.spec.template.spec.securityContext.runAsNonRoot, workload.metadata.name).toBe(true);
      expect(container.securityContext.allowPrivilegeEscalation).toBe(false);
    }
    expect((kustomization.images as Json[]).map((i) => i.name)).toContain('sd-jobs');
    for (const workload of workloads) {
      for (const container of workload.spec.template.spec.containers as Json[]) {
        if (container.image.startsWith('sd-jobs')) continue;
        expect(container.image, workload.metadata.name).toMatch(/:[0-9][\w.-]*$/);
      }
    }
  });

  it('runs the API with probes on the port it listens on, behind its Service, leaving the job metrics to one owner', () => {
    const loaded = loadConfig(containerEnv(apiContainer));
    expect(loaded.host).toBe('0.0.0.0');
    expect(apiContainer.ports[0].containerPort).toBe(loaded.port);
    expect(apiContainer.readinessProbe.httpGet.path).toBe('/readyz');
    expect(apiService.spec.ports[0].targetPort).toBe(apiContainer.ports[0].name);
    expect(api.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(loaded.syncTimeoutS);
    // Queue metrics: one owning process whatever the API's replica count.
    const owners = ownContainers.filter(({ container }) => loadConfig(containerEnv(container)).metrics.jobEvents && (container.command as string[]).join(' ').includes('api/main.js'));
    expect(owners.map(({ workload }) => workload.metadata.name)).toEqual(['sd-jobs-metrics']);
    const metrics = find('Deployment', 'sd-jobs-metrics');
    expect(metrics.spec.replicas).toBe(1);
    expect(metrics.spec.strategy.type).toBe('Recreate');
    expect(api.spec.replicas).toBeGreaterThan(1);
  });

  it('runs the notifier, checked by its health check, with the webhook secrets the API signs for', () => {
    const notifier = find('Deployment', 'sd-jobs-notifier').spec.template.spec.containers[0] as Json;
    expect(notifier.command.join(' ')).toBe('node dist/notifier/main.js');
    expect(notifier.livenessProbe.exec.command).toEqual(['node', 'dist/scripts/healthcheck.js', 'notifier']);
    const secrets = loadConfig(containerEnv(notifier)).webhooks.secrets;
    expect(secrets.length).toBeGreaterThan(0);
    expect(loadConfig(containerEnv(apiContainer)).webhooks.secrets).toEqual(secrets);
    expect(loadConfig(containerEnv(apiContainer)).auth.apiKeyHashes.length).toBeGreaterThan(0);
  });

  it('renders the catalogue into the models ConfigMap and one worker Deployment + ScaledObject per model', () => {
    expect(servedModels.length).toBeGreaterThanOrEqual(2);
    const rendered = renderCatalogue(catalogueText, { maxReplicas: 4, jobMaxRunS: configuredJobMaxRunS(dir) });
    for (const [file, text] of rendered) expect(fs.readFileSync(path.join(dir, file), 'utf8'), `${file}: re-render it with npm run k8s:worker`).toBe(text);
    expect(workerDeployments.map((d) => d.metadata.labels['sd-jobs/model']).sort()).toEqual([...servedModels].sort());
    // The API and the workers read the same catalogue; each worker holds its own model, on its own queue.
    const apiModels = loadConfig(containerEnv(apiContainer)).models;
    expect(apiModels.map((m) => m.name)).toEqual(servedModels);
    for (const worker of workerDeployments) {
      const model = worker.metadata.labels['sd-jobs/model'] as string;
      const loaded = loadConfig(containerEnv(worker.spec.template.spec.containers[0] as Json));
      expect(loaded.model.queue).toBe(apiModels.find((m) => m.name === model)?.queue);
      const scaled = find('ScaledObject', worker.metadata.name);
      const bounds = apiModels.find((m) => m.name === model)?.autoscaling;
      expect([scaled.spec.minReplicaCount, scaled.spec.maxReplicaCount]).toEqual([bounds?.minWorkers, bounds?.maxWorkers ?? 4]);
    }
    expect(() => renderCatalogue(JSON.stringify({ models: [{ name: 'a', dir: '/models/a', trigger_words: ['two words'] }] }), { maxReplicas: 4, jobMaxRunS: 600 })).toThrow(/models\[0\] \("a"\): trigger_words/);
    expect(() => renderCatalogue(JSON.stringify({ models: [{ name: 'a', dir: '/elsewhere/a' }] }), { maxReplicas: 4, jobMaxRunS: 600 })).toThrow(/dir must be \/models\/<folder>/);
  });

  it('renders each served model’s workers from the template, with a grace period derived from JOB_MAX_RUN_S', () => {
    const jobMaxRunS = configuredJobMaxRunS(dir);
    expect(jobMaxRunS).toBe(Number(config['JOB_MAX_RUN_S']));
    expect(workerDeployments.map((d) => d.metadata.name)).toContain(`sd-jobs-worker-${servedModel}`);
    for (const worker of workerDeployments) {
      const model = worker.metadata.labels['sd-jobs/model'] as string;
      const scaled = find('ScaledObject', worker.metadata.name);
      const rendered = renderWorker(model, { maxReplicas: scaled.spec.maxReplicaCount, minReplicas: scaled.spec.minReplicaCount, jobMaxRunS });
      expect(fs.readFileSync(path.join(dir, worker.__file), 'utf8'), `${worker.__file}: re-render it with npm run k8s:worker -- ${model}`).toBe(rendered);
      const spec = worker.spec.template.spec;
      expect(spec.terminationGracePeriodSeconds).toBe(jobMaxRunS + DRAIN_SLACK_S);
      const container = spec.containers[0] as Json;
      const env = containerEnv(container);
      expect(loadConfig(env).model).toMatchObject({ name: model, dir: `/models/${model}` });
      expect(loadConfig(env).worker.provider).toBe('cuda');
      expect(env['WORKER_DEVICE_ID']).toBe('0');
      expect(container.resources.limits['nvidia.com/gpu']).toBe(1);
      expect(worker.spec.strategy.rollingUpdate.maxSurge).toBe(0);
      expect(container.startupProbe.exec.command).toEqual(['node', 'dist/scripts/healthcheck.js', 'worker']);
      expect(container.volumeMounts).toContainEqual(expect.objectContaining({ name: 'models', mountPath: '/models', readOnly: true }));
      expect(spec.volumes).toEqual([{ name: 'models', persistentVolumeClaim: { claimName: 'sd-jobs-models', readOnly: true } }]);
    }
    // A loader pod writes the models while workers on several nodes read them.
    expect(find('PersistentVolumeClaim', 'sd-jobs-models').spec.accessModes).toEqual(['ReadWriteMany']);
  });

  it('scales each model’s workers 0…N with KEDA on the full job count from GET /v1/queue', () => {
    for (const worker of workerDeployments) {
      const scaled = find('ScaledObject', worker.metadata.name);
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
      // Each model scales on its own queue's load.
      expect(url.searchParams.get('model')).toBe(worker.metadata.labels['sd-jobs/model']);
      // The field KEDA reads is the one the API fills with the full load, not the wait list.
      const sample = queueView({ load: 7, waiting: 1, prioritized: 2, delayedDue: 1, active: 3, delayed: 4, paused: 0, at: 0 });
      expect(trigger?.metadata.valueLocation).toBe('load');
      expect(sample[trigger?.metadata.valueLocation as keyof typeof sample]).toBe(7);
      expect(Number(trigger?.metadata.targetValue)).toBeGreaterThan(0);
      expect(Number(trigger?.metadata.activationTargetValue)).toBe(0);
      // With API keys on, KEDA presents one of them as a bearer token.
      expect(trigger?.metadata.authMode).toBe('bearer');
      const auth = find('TriggerAuthentication', trigger?.authenticationRef.name);
      const ref = (auth.spec.secretTargetRef as Json[]).find((r) => r.parameter === 'token') as Json;
      const token = find('Secret', ref.name).stringData[ref.key] as string;
      expect(loadConfig(containerEnv(apiContainer)).auth.apiKeyHashes.length).toBeGreaterThan(0);
      expect(String(find('Secret', 'sd-jobs-api').stringData.API_KEYS).split(',')).toContain(token);
    }
  });
});

describe('deploy/kubernetes-webgpu', () => {
  const overlayDir = path.resolve(import.meta.dirname, '../deploy/kubernetes-webgpu');
  const overlay = parseAllDocuments(fs.readFileSync(path.join(overlayDir, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as Json;
  const patches = (overlay.patches as Json[]).map((p) => parseAllDocuments(fs.readFileSync(path.join(overlayDir, p.path), 'utf8'))[0]!.toJS() as Json);

  const workerContainer = workerDeployments[0]!.spec.template.spec.containers[0] as Json;

  it('runs the same deployment with webgpu workers that get NVIDIA\'s Vulkan driver', () => {
    expect(overlay.resources).toEqual(['../kubernetes']);
    // One patch, aimed by label at every model's worker Deployment.
    expect(overlay.patches.map((p: Json) => p.target)).toEqual([{ kind: 'Deployment', labelSelector: 'app.kubernetes.io/name=sd-jobs-worker' }]);
    expect(patches.map((p) => p.kind)).toEqual(['Deployment']);
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
    const deployments = built.filter((d) => d.kind === 'Deployment' && d.metadata.labels?.['app.kubernetes.io/name'] === 'sd-jobs-worker') as Json[];
    // kustomize orders them its own way: the same set.
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual(workerDeployments.map((d) => d.metadata.name).sort());
    for (const deployment of deployments) {
      const env = Object.fromEntries((deployment.spec.template.spec.containers[0].env as Json[]).map((e) => [e.name, e.value]));
      expect(env).toMatchObject({ WORKER_PROVIDER: 'webgpu', NVIDIA_DRIVER_CAPABILITIES: 'compute,utility,graphics' });
    }
    expect(built.length).toBe(resources.length);
  });
});
