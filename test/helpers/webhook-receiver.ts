import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A webhook receiver on loopback that records every request and answers as the test says. */

export interface ReceivedHook {
  headers: Record<string, string>;
  body: string;
  receivedAt: number;
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
}

export interface Receiver {
  url: string;
  port: number;
  received: ReceivedHook[];
  /** Resolves once `count` requests have arrived. */
  waitFor(count: number): Promise<ReceivedHook[]>;
  close(): Promise<void>;
}

/** `port` 0 picks a free one; a fixed port lets a test bring a receiver "back up". */
export async function startReceiver(answer: (hook: ReceivedHook, index: number) => Answer = () => ({ status: 204 }), port = 0): Promise<Receiver> {
  const received: ReceivedHook[] = [];
  const waiters: { count: number; resolve: (hooks: ReceivedHook[]) => void }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
      const hook = { headers, body: Buffer.concat(chunks).toString('utf8'), receivedAt: Date.now() };
      received.push(hook);
      const reply = answer(hook, received.length - 1);
      res.writeHead(reply.status, reply.headers ?? {}).end();
      for (const w of [...waiters]) {
        if (received.length >= w.count) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(received.slice());
        }
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}/hooks/sd`,
    port: bound,
    received,
    waitFor: (count) =>
      received.length >= count ? Promise.resolve(received.slice()) : new Promise((resolve) => waiters.push({ count, resolve })),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port nothing listens on (yet). */
export async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls `read` until `done` holds for its value (the test's own timeout bounds the wait). */
export async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, intervalMs = 30): Promise<T> {
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
