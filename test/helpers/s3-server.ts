import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';

/** A real S3-compatible server on loopback for one test file. */
export async function startS3Server(): Promise<{ endpoint: string; close(): Promise<void> }> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-s3-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: async () => {
      await server.close();
      await fs.rm(directory, { recursive: true, force: true });
    },
  };
}

/** The stack's environment for images in `endpoint`'s bucket `images` (created on first use). */
export const s3StorageEnv = (endpoint: string): Record<string, string> => ({
  STORAGE_DRIVER: 's3',
  S3_ENDPOINT: endpoint,
  S3_BUCKET: 'images',
  S3_CREATE_BUCKET: 'true',
  S3_ACCESS_KEY_ID: 'S3RVER',
  S3_SECRET_ACCESS_KEY: 'S3RVER',
});

/** An S3 server that can be taken down and brought back on the same port with the same data: a storage outage. */
export interface RestartableS3 {
  endpoint: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startRestartableS3Server(options: { port?: number } = {}): Promise<RestartableS3> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'sdjobs-s3-'));
  let server: S3rver | null = new S3rver({ address: '127.0.0.1', port: options.port ?? 0, silent: true, directory });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    stop: async () => {
      await server?.close();
      server = null;
    },
    start: async () => {
      if (server) return;
      server = new S3rver({ address: '127.0.0.1', port, silent: true, directory });
      await server.run();
    },
    close: async () => {
      await server?.close();
      server = null;
      await fs.rm(directory, { recursive: true, force: true });
    },
  };
}
