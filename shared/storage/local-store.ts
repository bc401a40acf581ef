import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../errors.js';
import { contentTypeOf } from '../output-format.js';
import { assertSafeKey, type ImageStore, type StoredObject } from './image-store.js';

/** As large as a small PNG's first block, so a disk with no block left to give fails the probe. */
const PROBE_BYTES = new Uint8Array(4096);

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

  async deletePrefix(prefix: string): Promise<void> {
    assertSafeKey(prefix.replace(/\/+$/, ''));
    try {
      await fs.rm(path.join(this.root, ...prefix.split('/').filter(Boolean)), { recursive: true, force: true });
    } catch (cause) {
      throw new StorageError(`could not delete ${prefix} under ${this.root}`, { cause });
    }
  }

  /**
   * Writes and removes a small file: a full disk (ENOSPC), a read-only mount or a path that is not
   * a folder fails here, not only at the next image. One probe file per process.
   */
  async check(): Promise<void> {
    const probe = path.join(this.root, `.write-probe-${process.pid}`);
    try {
      await fs.mkdir(this.root, { recursive: true });
      await fs.writeFile(probe, PROBE_BYTES);
    } catch (cause) {
      throw new StorageError(`image folder ${this.root} is not writable`, { cause });
    }
    await fs.rm(probe, { force: true }).catch(() => undefined);
  }
}
