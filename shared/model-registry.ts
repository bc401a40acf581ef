import type { Redis } from 'ioredis';
import { modelCapabilitiesKey } from './queues.js';

/**
 * What a worker learned about its model when it loaded it, published for whoever wants to see
 * what is loaded. The API's request checks do not wait for it: they use
 * `readModelCapabilities` (model-capabilities.ts), read from the export at boot.
 */
export interface PublishedModel {
  name: string;
  sizeMultiple: number;
  minSize: number;
  maxSize: number;
  defaultSize: number;
  fixedSize?: { width: number; height: number } | undefined;
  fixedBatch?: number | undefined;
  defaultScheduler: string;
  dtype: string;
  /** The filters its workers run, and those that run when a request names none. */
  filters?: { available: string[]; defaults: string[] } | undefined;
  publishedAt: number;
}

export async function publishModel(redis: Redis, prefix: string, model: PublishedModel): Promise<void> {
  await redis.set(modelCapabilitiesKey(prefix, model.name), JSON.stringify(model));
}

export async function readModel(redis: Redis, prefix: string, name: string): Promise<PublishedModel | null> {
  const raw = await redis.get(modelCapabilitiesKey(prefix, name));
  if (!raw) return null;
  try {
    return JSON.parse(raw) as PublishedModel;
  } catch {
    return null;
  }
}
