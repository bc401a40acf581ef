import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../errors.js';
import { contentTypeOf } from '../output-format.js';
import { assertSafeKey, type ImageStore, type StoredObject } from './image-store.js';

/** Images in a local folder: the zero-configuration default for one machine. */
export class LocalImageStore implements ImageStore {
  readonly kind = 'local';

  constructor(private readonly root: string) {}

  private pathOf(key: string): string {
    assertSafeKey(key);
    return path.join(this.root, ...key.split('/'));
  }

  async put(key: string, bytes: Uint8Array, _contentType?: string): Promise<void> {
    const target = this.pathOf(key);
    // Write then rename, so a reader never sees half a PNG and a retry replaces the file whole.
    const temp = `${target}.${process.pid}.${Date.now()}.tmp`;
    try {
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.writeFile(temp, bytes);
      await fs.rename(temp, target);
    } catch (cause) {
      await fs.rm(temp, { force: true }).catch(() => undefined);
      throw new StorageError(`could not write ${key} under ${this.root}`, { cause });
    }
  }

  async get(key: string): Promise<StoredObject | null> {
    const file = this.pathOf(key);
    try {
      const stat = await fs.stat(file);
      // The key's extension says the format (the worker names it so); S3 keeps the type it was given.
      return { body: createReadStream(file), contentType: contentTypeOf(key) ?? 'application/octet-stream', contentLength: stat.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new StorageError(`could not read ${key}`, { cause: err });
    }
  }

  async check(): Promise<void> {
    try {
      await fs.mkdir(this.root, { recursive: true });
      await fs.access(this.root, fs.constants.W_OK);
    } catch (cause) {
      throw new StorageError(`image folder ${this.root} is not writable`, { cause });
    }
  }
}
