import type { Response } from 'express';

/** Helpers for requests that hold their answer until a job ends. */

/** `Prefer: wait=N` (RFC 7240; `wait` alone = the most the service allows) → seconds, capped; null without one. */
export function preferredWaitS(header: string | undefined, maxS: number): number | null {
  if (!header) return null;
  for (const part of header.split(/[,;]/)) {
    const match = /^\s*wait(?:\s*=\s*"?(\d{1,7})"?)?\s*$/i.exec(part);
    if (match) return Math.min(match[1] === undefined ? maxS : Number(match[1]), maxS);
  }
  return null;
}

/** An AbortSignal that fires when the client goes away before the answer is sent. */
export function abortOnClose(res: Response): AbortSignal {
  const controller = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}
