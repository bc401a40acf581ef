import fs from 'node:fs';
import path from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';

/**
 * Validators for Kubernetes manifests from the vendored schemas (test/schemas/README.md): the
 * Kubernetes 1.36 OpenAPI definitions the manifests use, and KEDA 2.20's CRD schemas. Made strict
 * as `kubectl apply --validate=strict` is: an object with declared properties takes no other
 * (a misspelt field fails), int-or-string and quantities take either form.
 */
type Json = Record<string, any>;
const dir = path.resolve(import.meta.dirname, '../schemas');

export const KUBERNETES_VERSION = '1.36';
export const KEDA_VERSION = '2.20.2';

function strict(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(strict);
  if (!schema || typeof schema !== 'object') return schema;
  const s = schema as Json;
  if (s['format'] === 'int-or-string' || s['x-kubernetes-int-or-string'] === true) return { anyOf: [{ type: 'string' }, { type: 'integer' }] };
  const out: Json = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, k === 'properties' || k === 'definitions' ? mapValues(v as Json) : strict(v)]));
  if (s['properties'] && s['additionalProperties'] === undefined && s['x-kubernetes-preserve-unknown-fields'] !== true) out['additionalProperties'] = false;
  return out;
}
const mapValues = (o: Json) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, strict(v)]));

export function loadManifestValidators(): (doc: Json) => { errors: string[] } {
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  const k8s = JSON.parse(fs.readFileSync(path.join(dir, 'kubernetes/definitions.json'), 'utf8')) as { kinds: Record<string, string>; definitions: Json };
  const definitions = mapValues(k8s.definitions);
  // A quantity is written as a string ("8Gi") or a number (2).
  definitions['io.k8s.apimachinery.pkg.api.resource.Quantity'] = { anyOf: [{ type: 'string' }, { type: 'number' }] };
  ajv.addSchema({ $id: 'k8s', definitions });
  const validators = new Map<string, ValidateFunction>();
  for (const [kind, name] of Object.entries(k8s.kinds)) validators.set(kind, ajv.getSchema(`k8s#/definitions/${name}`) as ValidateFunction);
  for (const file of fs.readdirSync(path.join(dir, 'keda'))) {
    if (!file.endsWith('.json')) continue;
    const crd = JSON.parse(fs.readFileSync(path.join(dir, 'keda', file), 'utf8')) as { apiVersion: string; kind: string; schema: Json };
    validators.set(`${crd.apiVersion}/${crd.kind}`, ajv.compile(strict(crd.schema) as Json));
  }
  return (doc) => {
    const key = `${doc['apiVersion']}/${doc['kind']}`;
    const validate = validators.get(key);
    if (!validate) return { errors: [`no schema for ${key}`] };
    return { errors: validate(doc) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params['additionalProperty'])})` : ''}`) };
  };
}
