import { JOB_STATUSES, type JobStatus, type ListCursor } from '../shared/job-queue.js';
import type { FieldProblem } from '../shared/job-schema.js';
import { FORBIDDEN_KEYS, parseNumberText } from '../shared/request-values.js';
import { invalidRequest } from './http-errors.js';

/**
 * `GET /v1/jobs?status=queued,running&limit=20&cursor=…`: the caller's jobs, newest first. The
 * cursor is opaque to clients (base64url of where the last page stopped); a page may hold fewer
 * jobs than `limit` when a status filter skipped many, with a cursor to go on.
 */
export const DEFAULT_PAGE = 20;
export const MAX_PAGE = 100;

export interface ListQuery {
  statuses: Set<JobStatus>;
  limit: number;
  after: ListCursor | undefined;
}

export const encodeCursor = (at: ListCursor) => Buffer.from(`${at.createdAt}:${at.id}`, 'utf8').toString('base64url');

function decodeCursor(text: string): ListCursor | null {
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(text)) return null;
  const match = /^(\d{1,15}):([A-Za-z0-9-]{1,64})$/.exec(Buffer.from(text, 'base64url').toString('utf8'));
  return match ? { createdAt: Number(match[1]), id: match[2] as string } : null;
}

/** Reads the query of a listing; 400 naming the parameter for anything it cannot take. */
export function parseListQuery(query: Record<string, unknown>): ListQuery {
  const problems: FieldProblem[] = [];
  const out: ListQuery = { statuses: new Set(), limit: DEFAULT_PAGE, after: undefined };
  for (const name of Object.keys(query)) {
    const raw = query[name];
    if (FORBIDDEN_KEYS.has(name)) {
      problems.push({ field: name, message: `parameter ${name} is not allowed` });
      continue;
    }
    if (typeof raw !== 'string') {
      problems.push({ field: name, message: `${name} is given more than once` });
      continue;
    }
    if (name === 'status') {
      for (const status of raw.split(',')) {
        if ((JOB_STATUSES as readonly string[]).includes(status)) out.statuses.add(status as JobStatus);
        else problems.push({ field: 'status', message: `status must be a comma-separated list of ${JOB_STATUSES.join(', ')}` });
      }
    } else if (name === 'limit') {
      const limit = parseNumberText(raw);
      if (limit === null || !Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
        problems.push({ field: 'limit', message: `limit must be a whole number from 1 to ${MAX_PAGE}` });
      } else out.limit = limit;
    } else if (name === 'cursor') {
      const cursor = decodeCursor(raw);
      if (cursor === null) problems.push({ field: 'cursor', message: 'cursor must be a next_cursor this API returned' });
      else out.after = cursor;
    } else {
      problems.push({ field: name, message: `unknown parameter: ${name} (status, limit and cursor are)` });
    }
  }
  if (problems.length > 0) throw invalidRequest(problems);
  return out;
}
