import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

/**
 * Renders one model's worker Deployment and KEDA ScaledObject from
 * deploy/kubernetes/workers/worker.yaml.tmpl into deploy/kubernetes/workers/<model>.yaml:
 *   npm run k8s:worker -- <model> [--max-replicas N]
 * then list the file in deploy/kubernetes/kustomization.yaml. The grace period comes from the
 * ConfigMap's JOB_MAX_RUN_S (+ 60 s), so re-render every model after changing it.
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

export function renderWorker(model: string, options: { maxReplicas: number; jobMaxRunS: number }): string {
  if (!MODEL_NAME.test(model)) throw new Error(`model name "${model}": lower-case letters, digits and '-', at most 48, as Kubernetes names need`);
  if (!Number.isInteger(options.maxReplicas) || options.maxReplicas < 1) throw new Error('--max-replicas: a whole number ≥ 1 (the GPUs for this model)');
  return fs
    .readFileSync(WORKER_TEMPLATE, 'utf8')
    .replaceAll('{{MODEL}}', model)
    .replaceAll('{{MAX_REPLICAS}}', String(options.maxReplicas))
    .replaceAll('{{GRACE_S}}', String(options.jobMaxRunS + DRAIN_SLACK_S));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [model, ...rest] = process.argv.slice(2);
  const flag = rest.indexOf('--max-replicas');
  try {
    if (!model) throw new Error('usage: npm run k8s:worker -- <model> [--max-replicas N]');
    const text = renderWorker(model, { maxReplicas: flag >= 0 ? Number(rest[flag + 1]) : 4, jobMaxRunS: configuredJobMaxRunS() });
    const out = path.join(DEPLOY_DIR, 'workers', `${model}.yaml`);
    fs.writeFileSync(out, text);
    process.stdout.write(`wrote ${path.relative(process.cwd(), out)}; list it in deploy/kubernetes/kustomization.yaml\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
}
