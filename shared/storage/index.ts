import type { Config } from '../config.js';
import type { ImageStore } from './image-store.js';
import { LocalImageStore } from './local-store.js';
import { S3ImageStore } from './s3-store.js';

export { imageKey, jobPrefix, resultKey, type ImageStore, type StoredObject } from './image-store.js';
export { LocalImageStore } from './local-store.js';
export { S3ImageStore } from './s3-store.js';

export function createImageStore(storage: Config['storage']): ImageStore {
  if (storage.driver === 'local') return new LocalImageStore(storage.dir);
  return new S3ImageStore(storage);
}
