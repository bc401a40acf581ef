import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { parseCatalogueText } from '../shared/model-catalogue.js';

/**
 * Renders the served models' Kubernetes objects from the catalogue deploy/kubernetes/models.json
 * (the MODELS_FILE format, dirs under /models): models.yaml (a ConfigMap holding the catalogue as
 * MODELS_JSON, read by the API, the notifier and the workers), and per model
 * workers/<model>.yaml (its worker Deployment, WORKER_MODEL set, and its KEDA ScaledObject on
 * that model's own load, GET /v1/queue?model=<model>, between its min_workers and max_workers)
 * from workers/worker.yaml.tmpl; the kustomization's list of worker files is rewritten to match:
 *   npm run k8s:worker [-- --max-replicas N]      (N: for models without autoscaling.max_workers; default 4)
 * One model without the catalogue: npm run k8s:worker -- <model> [--max-replicas N].
 * The grace period comes from the ConfigMap's JOB_MAX_RUN_S (+ 60 s): re-render after changing it.
 */
export const DEPLOY_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'deploy', 'kubernetes');
export const WORKER_TEMPLATE = path.join(DEPLOY_DIR, 'workers', 'worker.yaml.tmpl');
/** Slack past the job limit for the drain: encoding and upload of the last job, then exit. */
export const DRAIN_SLACK_S = 60;
const MODEL_NAME = /^[a-z0-9]([-a-z0-9]{0,46}[a-z0-9])?$/;

/** JOB_MAX_RUN_S as the ConfigMap (deploy/kubernetes/config.yaml) sets it. */
export function configuredJobMaxRunS(dir = DEPLOY_DIR): number {
  const doc = parseAllDocuments(fs.readFileSync(path.join(dir, 'config.yaml'), 'utf8'))
    .map((d) => d.toJS() as { kind?: string; data?: Record<string, string> })
    .find((d) => d.kind === 'ConfigMap');
  const value = Number(doc?.data?.['JOB_MAX_RUN_S'] ?? 600);
  if (!Number.isInteger(value) || value <= 0) throw new Error('config.yaml: JOB_MAX_RUN_S must be a positive number of seconds for the workers to have a bounded drain');
  return value;
}

export function renderWorker(model: string, options: { maxReplicas: number; jobMaxRunS: number; minReplicas?: number }): string {
  if (!MODEL_NAME.test(model)) throw new Error(`model name "${model}": lower-case letters, digits and '-', at most 48, as Kubernetes names need`);
  if (!Number.isInteger(options.maxReplicas) || options.maxReplicas < 1) throw new Error('--max-replicas: a whole number ≥ 1 (the GPUs for this model)');
  const minReplicas = options.minReplicas ?? 0;
  if (!Number.isInteger(minReplicas) || minReplicas < 0 || minReplicas > options.maxReplicas) throw new Error(`min_workers of ${model}: a whole number from 0 to ${options.maxReplicas}`);
  return fs
    .readFileSync(WORKER_TEMPLATE, 'utf8')
    .replaceAll('{{MODEL}}', model)
    .replaceAll('{{MIN_REPLICAS}}', String(minReplicas))
    .replaceAll('{{MAX_REPLICAS}}', String(options.maxReplicas))
    .replaceAll('{{GRACE_S}}', String(options.jobMaxRunS + DRAIN_SLACK_S));
}

export const CATALOGUE_FILE = path.join(DEPLOY_DIR, 'models.json');
const GENERATED_MARK = '# GENERATED from workers/worker.yaml.tmpl';

/**
 * The files the catalogue renders to, by path relative to deploy/kubernetes: models.yaml and one
 * workers/<model>.yaml per model. Throws naming the entry and field (as MODELS_FILE does at boot).
 */
export function renderCatalogue(catalogueText: string, options: { maxReplicas: number; jobMaxRunS: number }): Map<string, string> {
  const raw = JSON.parse(catalogueText) as unknown;
  const models = parseCatalogueText(catalogueText, 'models.json', { minWorkers: 0, initialWorkers: 0, maxWorkers: undefined }, '/');
  const files = new Map<string, string>();
  for (const model of models) {
    if (path.dirname(model.dir) !== '/models') throw new Error(`models.json: ${model.name}: dir must be /models/<folder> (the models volume), got ${model.dir}`);
    files.set(
      `workers/${model.name}.yaml`,
      renderWorker(model.name, { maxReplicas: model.autoscaling.maxWorkers ?? options.maxReplicas, minReplicas: model.autoscaling.minWorkers, jobMaxRunS: options.jobMaxRunS }),
    );
  }
  files.set(
    'models.yaml',
    [
      '# GENERATED from models.json by `npm run k8s:worker`: edit models.json and re-render (test/deploy.test.ts checks it).',
      '# The served models (MODELS_JSON, the MODELS_FILE format inline): the API routes requests by it, the',
      '# notifier follows every model\'s queue, and each worker takes the queue of its WORKER_MODEL.',
      'apiVersion: v1',
      'kind: ConfigMap',
      'metadata:',
      '  name: sd-jobs-models',
      '  namespace: sd-jobs',
      'data:',
      `  MODELS_JSON: ${JSON.stringify(JSON.stringify(raw))}`,
      '',
    ].join('\n'),
  );
  return files;
}

/** The kustomization with its list of model files (after the `# Models:` line) replaced by `files`. */
export function withModelFiles(kustomization: string, files: readonly string[]): string {
  const lines = kustomization.split('\n');
  const at = lines.findIndex((l) => l.trim().startsWith('# Models:'));
  if (at < 0) throw new Error('kustomization.yaml: no "# Models:" line to list the model files after');
  let end = at + 1;
  while (end < lines.length && /^\s+- (models\.yaml|workers\/)/.test(lines[end] as string)) end += 1;
  return [...lines.slice(0, at + 1), ...files.map((f) => `  - ${f}`), ...lines.slice(end)].join('\n');
}

function renderAll(maxReplicas: number): string[] {
  const files = renderCatalogue(fs.readFileSync(CATALOGUE_FILE, 'utf8'), { maxReplicas, jobMaxRunS: configuredJobMaxRunS() });
  // Worker files of models no longer in the catalogue go.
  for (const old of fs.readdirSync(path.join(DEPLOY_DIR, 'workers'))) {
    const file = `workers/${old}`;
    if (!old.endsWith('.yaml') || files.has(file)) continue;
    if (fs.readFileSync(path.join(DEPLOY_DIR, file), 'utf8').startsWith(GENERATED_MARK)) fs.rmSync(path.join(DEPLOY_DIR, file));
  }
  for (const [file, text] of files) fs.writeFileSync(path.join(DEPLOY_DIR, file), text);
  const kustomization = path.join(DEPLOY_DIR, 'kustomization.yaml');
  fs.writeFileSync(kustomization, withModelFiles(fs.readFileSync(kustomization, 'utf8'), [...files.keys()].sort((a, b) => (a === 'models.yaml' ? -1 : b === 'models.yaml' ? 1 : a.localeCompare(b)))));
  return [...files.keys()];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const flag = args.indexOf('--max-replicas');
  const maxReplicas = flag >= 0 ? Number(args[flag + 1]) : 4;
  const model = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--max-replicas');
  const rest = args;
  if (model === undefined) {
    try {
      const written = renderAll(maxReplicas);
      process.stdout.write(`wrote ${written.map((f) => `deploy/kubernetes/${f}`).join(', ')} and their list in deploy/kubernetes/kustomization.yaml\n`);
    } catch (err) {
      process.stderr.write(`${(err as Error).message}\n`);
      process.exit(2);
    }
    process.exit(0);
  }
  try {
    if (!model) throw new Error('usage: npm run k8s:worker [-- <model>] [--max-replicas N]');
    const text = renderWorker(model, { maxReplicas: flag >= 0 ? Number(rest[flag + 1]) : 4, jobMaxRunS: configuredJobMaxRunS() });
    const out = path.join(DEPLOY_DIR, 'workers', `${model}.yaml`);
    fs.writeFileSync(out, text);
    process.stdout.write(`wrote ${path.relative(process.cwd(), out)}; list it in deploy/kubernetes/kustomization.yaml\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
}
