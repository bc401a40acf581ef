import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';

/**
 * A redis-server of a test's own, with AOF, on a free port and in a temporary folder: the shared
 * Redis must never be restarted or killed, this one may be. `keyLoadDelayUs` slows the load of
 * each key after a restart (Redis's own test knob), so the window in which Redis answers LOADING
 * is long enough to hit.
 */
export interface OwnRedis {
  port: number;
  url: string;
  dir: string;
  pid(): number | null;
  /** SHUTDOWN (the AOF is flushed) or SIGKILL; resolves once the process is gone. */
  stop(how: 'shutdown' | 'kill'): Promise<void>;
  /** Starts it again on the same port and folder; resolves once it accepts connections (it may still be LOADING). */
  start(): Promise<void>;
  /** Stops it for good and removes its folder. */
  close(): Promise<void>;
}

export interface OwnRedisOptions {
  keyLoadDelayUs?: number;
  appendfsync?: 'always' | 'everysec' | 'no';
  /** Where redis-server's own log goes; default: discarded. */
  logFile?: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function startOwnRedis(options: OwnRedisOptions = {}): Promise<OwnRedis> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-redis-'));
  const port = await freePort();
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();

  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--appendonly', 'yes',
    '--appendfsync', options.appendfsync ?? 'everysec',
    '--save', '',
    '--maxmemory-policy', 'noeviction',
    '--enable-debug-command', 'local',
    '--loglevel', 'warning',
    '--logfile', options.logFile ?? '',
    // Slow loading, and clients served (with LOADING) every KiB of it rather than every 2 MiB.
    ...(options.keyLoadDelayUs ? ['--key-load-delay', String(options.keyLoadDelayUs), '--loading-process-events-interval-bytes', '1024'] : []),
  ];

  const start = async () => {
    if (child) return;
    const proc = spawn('redis-server', args, { stdio: 'ignore' });
    child = proc;
    exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    void exited.then(() => {
      if (child === proc) child = null;
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
      if (ok) return;
      if (child !== proc) throw new Error(`redis-server on port ${port} exited at start`);
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const stop = async (how: 'shutdown' | 'kill') => {
    const proc = child;
    if (!proc) return;
    if (how === 'kill') {
      proc.kill('SIGKILL');
    } else {
      const admin = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      await admin.connect().catch(() => undefined);
      // SHUTDOWN closes the connection instead of answering.
      await admin.call('SHUTDOWN').catch(() => undefined);
      admin.disconnect();
    }
    await exited;
  };

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    pid: () => child?.pid ?? null,
    stop,
    start,
    close: async () => {
      await stop('kill');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
