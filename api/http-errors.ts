import type { ErrorRequestHandler, Response } from 'express';
import { ServiceError } from '../shared/errors.js';
import type { FieldProblem } from '../shared/job-schema.js';
import type { Logger } from '../shared/logger.js';

/** Every error body has one shape: `{ error: { code, message, field?, details? } }`. */
export interface ErrorBody {
  error: { code: string; message: string; field?: string; details?: FieldProblem[] };
}

export class HttpError extends Error {
  /** Sent as Retry-After (seconds) when set: when trying again makes sense (a 503). */
  retryAfterS?: number;

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly details?: FieldProblem[],
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

export function sendError(res: Response, err: HttpError): void {
  const body: ErrorBody = { error: { code: err.code, message: err.message } };
  if (err.field !== undefined) body.error.field = err.field;
  if (err.details !== undefined) body.error.details = err.details;
  if (err.retryAfterS !== undefined) res.setHeader('Retry-After', String(err.retryAfterS));
  res.status(err.status).json(body);
}

/** Maps body-parser, service and unexpected errors to JSON answers; only the last kind is a 500. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, next) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const parserType = (err as { type?: string }).type;
    if (err instanceof HttpError) return sendError(res, err);
    if (parserType === 'entity.parse.failed') {
      return sendError(res, new HttpError(400, 'malformed_json', 'The request body is not valid JSON.', 'body'));
    }
    if (parserType === 'entity.too.large') {
      return sendError(res, new HttpError(413, 'body_too_large', 'The request body is larger than the service accepts.', 'body'));
    }
    if (parserType === 'encoding.unsupported' || parserType === 'charset.unsupported') {
      return sendError(res, new HttpError(415, 'unsupported_encoding', 'The request body encoding is not supported.', 'body'));
    }
    if (err instanceof ServiceError && err.code === 'queue_unavailable') {
      res.setHeader('Retry-After', '1');
      return sendError(res, new HttpError(503, err.code, err.message));
    }
    if (err instanceof ServiceError && err.code === 'storage_error') {
      logger.error({ err, path: req.path }, 'storage failure');
      return sendError(res, new HttpError(503, err.code, 'Image storage is unreachable; try again shortly.'));
    }
    logger.error({ err, path: req.path }, 'unhandled error');
    sendError(res, new HttpError(500, 'internal_error', 'Something went wrong on our side.'));
  };
}
