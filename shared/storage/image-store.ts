import type { Readable } from 'node:stream';

/** Where finished images live. Keys look like `jobs/<jobId>/<n>.png` (or .webp, .jpg); a put overwrites. */
export interface StoredObject {
  body: Readable;
  contentType: string;
  contentLength: number | undefined;
}

export interface ImageStore {
  readonly kind: string;
  put(key: string, bytes: Uint8Array, contentType: string): Promise<void>;
  /** null when there is no such object. */
  get(key: string): Promise<StoredObject | null>;
  /** A time-limited URL a client can fetch directly, where the store supports it. */
  presignedUrl?(key: string): Promise<string>;
  /** Removes every object whose key starts with `prefix` (a folder: ends with `/`); none there is fine. Idempotent. Retention uses it. */
  deletePrefix?(prefix: string): Promise<void>;
  /** Throws when the store is unreachable or not writable (the local store writes a probe: a full disk fails it); used by readiness checks. */
  check(): Promise<void>;
  close?(): Promise<void>;
}

/** Keys are made by the service; refuse anything that could escape a folder or bucket prefix. */
export function assertSafeKey(key: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._/-]*$/.test(key) || key.split('/').some((part) => part === '..' || part === '')) {
    throw new Error(`unsafe storage key: ${JSON.stringify(key)}`);
  }
}

/** `extension` is the image format's (shared/output-format.ts): what the key says is what it holds. */
export const imageKey = (jobId: string, index: number, extension = 'png') => `jobs/${jobId}/${index}.${extension}`;
/** A finished run's result beside its images, so a run whose completion never reached Redis is not repeated. */
export const resultKey = (jobId: string) => `jobs/${jobId}/result.json`;
/** Everything stored for one job (its images and result), removed together when the job expires. */
export const jobPrefix = (jobId: string) => `jobs/${jobId}/`;
