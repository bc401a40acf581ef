import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import { pinoHttp } from 'pino-http';
import { withLogContext, type Logger } from '../shared/logger.js';

/**
 * One JSON line per answered request, and the request id on every line logged while the request
 * is handled (route handlers log through the app's logger; `withLogContext` adds `reqId`). A
 * client's `X-Request-Id` is kept when it looks like an id, so a trace crosses a proxy; the id is
 * sent back in the response header either way.
 */

export const REQUEST_ID_HEADER = 'X-Request-Id';
const ACCEPTABLE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Paths polled by probes and Prometheus: answered without a log line unless they fail. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  const value = Array.isArray(given) ? given[0] : given;
  return value && ACCEPTABLE_ID.test(value) ? value : randomUUID();
}

export function requestLogging(logger: Logger): RequestHandler[] {
  const http = pinoHttp({
    logger,
    genReqId: (req, res) => {
      const id = requestIdOf(req);
      res.setHeader(REQUEST_ID_HEADER, id);
      return id;
    },
    // The request id is a top-level field on every line (from the log context), not nested in req.
    customProps: (req) => ({ reqId: req.id }),
    quietReqLogger: false,
    autoLogging: { ignore: (req) => QUIET_PATHS.has(new URL(req.url ?? '/', 'http://x').pathname) },
    // A client that leaves before its answer is not an error of ours: info, and said so.
    // A 504 is a synchronous job's own deadline (timeout_s, ttl_s): the client's choice, a warning.
    customLogLevel: (_req, res, err) =>
      !res.writableEnded && !err
        ? 'info'
        : err || (res.statusCode >= 500 && res.statusCode !== 504)
          ? 'error'
          : res.statusCode >= 400
            ? 'warn'
            : 'info',
    customSuccessMessage: (req, res, ms) =>
      res.writableEnded ? `${req.method} ${pathOf(req)} ${res.statusCode} ${Math.round(ms)}ms` : `${req.method} ${pathOf(req)} aborted by the client after ${Math.round(ms)}ms`,
    customErrorMessage: (req, res) => `${req.method} ${pathOf(req)} ${res.statusCode}`,
    serializers: {
      req: (req: { id: unknown; method: string; url: string; headers: Record<string, string | undefined> }) => ({
        method: req.method,
        url: req.url,
        userAgent: req.headers['user-agent'],
      }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
  });
  const context: RequestHandler = (req, _res, next) => {
    withLogContext({ reqId: req.id }, next);
  };
  return [http as unknown as RequestHandler, context];
}

const pathOf = (req: IncomingMessage & { originalUrl?: string }) => (req.originalUrl ?? req.url ?? '').split('?')[0];
