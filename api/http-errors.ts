import type { ErrorRequestHandler, Request, Response } from 'express';
import { ServiceError } from '../shared/errors.js';
import type { FieldProblem } from '../shared/job-schema.js';
import type { Logger } from '../shared/logger.js';

/** Every error body has one shape: `{ error: { code, message, field?, details? } }`. */
export interface ErrorBody {
  error: { code: string; message: string; field?: string; details?: FieldProblem[] };
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly details?: FieldProblem[],
    /** Extra response headers (Retry-After on 429 and 503). */
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function invalidRequest(problems: FieldProblem[]): HttpError {
  const first = problems[0] ?? { field: '', message: 'invalid request' };
  const message = problems.map((p) => p.message).join('; ');
  return new HttpError(400, 'invalid_request', message, first.field, problems);
}

export function errorBody(err: HttpError): ErrorBody {
  const body: ErrorBody = { error: { code: err.code, message: err.message } };
  if (err.field !== undefined) body.error.field = err.field;
  if (err.details !== undefined) body.error.details = err.details;
  return body;
}

export function sendError(res: Response, err: HttpError): void {
  for (const [name, value] of Object.entries(err.headers ?? {})) res.setHeader(name, value);
  res.status(err.status).json(errorBody(err));
}

/** Node's and the parsers' codes for a peer that went away mid-request. */
const GONE_CODES = new Set(['ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED']);

/** True when the client left before its answer was complete: nothing to answer, nothing to blame on us. */
export function clientWentAway(err: unknown, req: Request, res: Response): boolean {
  const e = err as { type?: unknown; code?: unknown } | null;
  if (e?.type === 'request.aborted') return true;
  if (typeof e?.code === 'string' && GONE_CODES.has(e.code) && (req.destroyed || res.destroyed || req.socket?.destroyed === true)) return true;
  return res.destroyed && !res.writableFinished;
}

/**
 * A 4xx that Express, its router or body-parser raised (http-errors style: `status` and
 * `expose`), as an answer in our shape. Known types get their own code; the rest keep their
 * status with a generic code, so no client mistake ever reads as a 500.
 */
function fromParserError(err: unknown, req: Request): HttpError | null {
  const e = err as { status?: unknown; statusCode?: unknown; type?: unknown; code?: unknown; name?: unknown } | null;
  const status = typeof e?.status === 'number' ? e.status : typeof e?.statusCode === 'number' ? e.statusCode : undefined;
  if (status === undefined || status < 400 || status > 499) return null;
  switch (e?.type) {
    case 'entity.parse.failed':
      return new HttpError(400, 'malformed_json', 'The request body is not valid JSON.', 'body');
    case 'entity.too.large':
      return new HttpError(413, 'body_too_large', 'The request body is larger than the service accepts.', 'body');
    case 'encoding.unsupported':
      return new HttpError(415, 'unsupported_encoding', 'The request body\'s Content-Encoding is not supported (use gzip, deflate, br or none).', 'content-encoding');
    case 'charset.unsupported':
      return new HttpError(415, 'unsupported_encoding', 'The request body\'s charset is not supported (use utf-8).', 'content-type');
    case 'request.size.invalid':
      return new HttpError(400, 'malformed_body', 'The request body is shorter or longer than its Content-Length says.', 'body');
    default:
      break;
  }
  if (e?.name === 'URIError') {
    return new HttpError(400, 'malformed_path', 'The URL path holds a malformed percent-escape (such as %E0%A4%A).', 'path');
  }
  // zlib's and brotli's codes (Z_DATA_ERROR, Z_BUF_ERROR, ERR__ERROR_FORMAT_…): body-parser passes
  // them on as 400s without a type of their own.
  const encoded = (req.get('content-encoding') ?? 'identity').trim().toLowerCase() !== 'identity';
  if ((typeof e?.code === 'string' && /^(Z_|ERR__)/.test(e.code)) || (encoded && e?.type === undefined)) {
    return new HttpError(400, 'malformed_body', 'The request body could not be decompressed: it does not match its Content-Encoding.', 'content-encoding');
  }
  return new HttpError(status, status === 400 ? 'bad_request' : 'client_error', 'The request is malformed.');
}

/**
 * Maps body-parser, router, service and unexpected errors to JSON answers; only the last kind is
 * a 500. A client that went away is logged at info: it is not our error, and there is nobody
 * to answer.
 */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    if (clientWentAway(err, req, res)) {
      logger.info({ path: req.path, reason: (err as Error)?.message }, 'client went away before its answer');
      if (!res.destroyed) res.destroy();
      return;
    }
    if (res.headersSent) {
      // The answer had started (an image stream): it cannot become an error answer any more.
      logger.error({ err, path: req.path }, 'request failed after its answer started');
      res.destroy();
      return;
    }
    if (err instanceof HttpError) return sendError(res, err);
    const parserError = fromParserError(err, req);
    if (parserError) return sendError(res, parserError);
    if (err instanceof ServiceError && err.code === 'queue_unavailable') {
      return sendError(res, new HttpError(503, err.code, err.message, undefined, undefined, { 'Retry-After': '1' }));
    }
    if (err instanceof ServiceError && err.code === 'queued_jobs_limit') {
      return sendError(res, new HttpError(429, err.code, err.message));
    }
    if (err instanceof ServiceError && err.code === 'storage_error') {
      logger.error({ err, path: req.path }, 'storage failure');
      return sendError(res, new HttpError(503, err.code, 'Image storage is unreachable; try again shortly.'));
    }
    logger.error({ err, path: req.path }, 'unhandled error');
    sendError(res, new HttpError(500, 'internal_error', 'Something went wrong on our side.'));
  };
}
