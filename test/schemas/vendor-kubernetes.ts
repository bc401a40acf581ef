import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';

/**
 * Re-makes the vendored Kubernetes and KEDA schemas in test/schemas/ (see README.md there) from
 * files downloaded by hand, keeping only what deploy/kubernetes uses, without descriptions:
 *   npx tsx test/schemas/vendor-kubernetes.ts <swagger.json of a Kubernetes release> <keda config/crd/bases dir>
 * Not run by tests: they read the output.
 */
type Json = Record<string, any>;

/** The kinds the manifests may use (group/version/kind). */
export const KUBERNETES_KINDS = [
  'v1/Namespace',
  'v1/ConfigMap',
  'v1/Secret',
  'v1/Service',
  'v1/PersistentVolumeClaim',
  'apps/v1/Deployment',
  'apps/v1/StatefulSet',
  'batch/v1/Job',
  'policy/v1/PodDisruptionBudget',
];
const KEDA_CRDS = { ScaledObject: 'keda.sh_scaledobjects.yaml', TriggerAuthentication: 'keda.sh_triggerauthentications.yaml' };

function strip(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(strip);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Json).filter(([k]) => k !== 'description').map(([k, v]) => [k, strip(v)]));
  }
  return value;
}

function refsOf(value: unknown, into: Set<string>): void {
  if (Array.isArray(value)) value.forEach((v) => refsOf(v, into));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value as Json)) {
      if (k === '$ref' && typeof v === 'string') into.add(v.replace('#/definitions/', ''));
      else refsOf(v, into);
    }
  }
}

function main(): void {
  const [swaggerFile, kedaDir] = process.argv.slice(2);
  if (!swaggerFile || !kedaDir) throw new Error('usage: vendor-kubernetes.ts <swagger.json> <keda crd/bases dir>');
  const here = path.dirname(new URL(import.meta.url).pathname);
  const swagger = JSON.parse(fs.readFileSync(swaggerFile, 'utf8')) as { definitions: Record<string, Json> };

  const kinds: Record<string, string> = {};
  for (const [name, def] of Object.entries(swagger.definitions)) {
    for (const gvk of (def['x-kubernetes-group-version-kind'] ?? []) as { group: string; version: string; kind: string }[]) {
      const key = `${gvk.group ? `${gvk.group}/` : ''}${gvk.version}/${gvk.kind}`;
      if (KUBERNETES_KINDS.includes(key)) kinds[key] = name;
    }
  }
  const missing = KUBERNETES_KINDS.filter((k) => !kinds[k]);
  if (missing.length > 0) throw new Error(`not in the swagger: ${missing.join(', ')}`);
  const keep = new Set<string>();
  const queue = Object.values(kinds);
  while (queue.length > 0) {
    const name = queue.pop() as string;
    if (keep.has(name)) continue;
    keep.add(name);
    const refs = new Set<string>();
    refsOf(swagger.definitions[name], refs);
    queue.push(...refs);
  }
  const definitions = Object.fromEntries([...keep].sort().map((name) => [name, strip(swagger.definitions[name])]));
  fs.writeFileSync(path.join(here, 'kubernetes', 'definitions.json'), `${JSON.stringify({ kinds, definitions })}\n`);

  for (const [kind, file] of Object.entries(KEDA_CRDS)) {
    const crd = parse(fs.readFileSync(path.join(kedaDir, file), 'utf8')) as Json;
    const version = (crd.spec.versions as Json[]).find((v) => v.name === 'v1alpha1') as Json;
    const schema = strip(version.schema.openAPIV3Schema);
    fs.writeFileSync(path.join(here, 'keda', `${kind.toLowerCase()}-v1alpha1.json`), `${JSON.stringify({ apiVersion: `${crd.spec.group}/v1alpha1`, kind, schema })}\n`);
  }
}

main();
