import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import type { Config } from '../shared/config.js';
import type { JobRecord } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import { HttpError } from './http-errors.js';

/**
 * API keys: `Authorization: Bearer <key>`. The configuration holds only SHA-256 hashes of the keys;
 * a presented key is hashed and compared against every one of them in constant time. A job
 * belongs to the key that made it: `owner` is the first 16 hex digits of that key's hash.
 */

export const ownerIdOf = (hashHex: string) => hashHex.slice(0, 16);

export interface ApiKeys {
  /** False when no keys are configured: the service runs open. */
  readonly enabled: boolean;
  /** The owner id of a valid key, or null. */
  identify(key: string): string | null;
}

export function createApiKeys(hashesHex: readonly string[]): ApiKeys {
  const hashes = hashesHex.map((hex) => Buffer.from(hex, 'hex'));
  return {
    enabled: hashes.length > 0,
    identify(key) {
      const presented = createHash('sha256').update(key, 'utf8').digest();
      let match: Buffer | null = null;
      // Every stored hash is compared, so timing does not say which one matched.
      for (const hash of hashes) if (timingSafeEqual(presented, hash) && match === null) match = hash;
      return match ? ownerIdOf(match.toString('hex')) : null;
    },
  };
}

/**
 * Guards the routes it is mounted on. With keys configured a request needs a valid one (401
 * otherwise) and carries its owner id in `res.locals.owner`; with none, every request passes
 * and a warning at startup says so.
 */
export function requireApiKey(config: Readonly<Config>, logger: Logger): RequestHandler {
  const keys = createApiKeys(config.auth.apiKeyHashes);
  if (!keys.enabled) {
    logger.warn('no API_KEYS configured: the API is open to anyone who can reach it; set API_KEYS to require keys');
  }
  return (req, res, next) => {
    if (!keys.enabled) return next();
    const header = req.get('authorization');
    const match = header === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    res.setHeader('WWW-Authenticate', 'Bearer realm="sd-jobs"');
    if (!match) {
      const message =
        header === undefined
          ? 'This API needs a key: send Authorization: Bearer <your API key>.'
          : 'The Authorization header must read Bearer <your API key>.';
      return next(new HttpError(401, 'unauthorized', message, 'authorization'));
    }
    const owner = keys.identify(match[1] as string);
    if (owner === null) return next(new HttpError(401, 'unauthorized', 'The API key is not valid.', 'authorization'));
    res.removeHeader('WWW-Authenticate');
    res.locals.owner = owner;
    next();
  };
}

/** The owner id of the key this request came with; undefined when the service runs open. */
export function ownerOf(res: Response): string | undefined {
  return typeof res.locals.owner === 'string' ? res.locals.owner : undefined;
}

/** With keys on, a job is only visible to the key that made it; others are told it does not exist. */
export function visibleTo(config: Readonly<Config>, res: Response, record: JobRecord): boolean {
  if (config.auth.apiKeyHashes.length === 0) return true;
  return record.payload.owner !== undefined && record.payload.owner === ownerOf(res);
}
