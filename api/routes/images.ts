import { pipeline } from 'node:stream/promises';
import type { Response } from 'express';
import { HttpError } from '../http-errors.js';
import type { AppDeps } from '../deps.js';

/** Streams a stored image, or redirects to a presigned URL when the store is set up for it. */
export async function streamImage(deps: AppDeps, key: string, res: Response, extraHeaders: Record<string, string> = {}): Promise<void> {
  if (deps.presignImages && deps.store.presignedUrl) {
    res.redirect(302, await deps.store.presignedUrl(key));
    return;
  }
  const object = await deps.store.get(key);
  if (!object) throw new HttpError(404, 'image_not_found', 'The image is no longer stored.', 'file');
  res.status(200).setHeader('Content-Type', object.contentType);
  if (object.contentLength !== undefined) res.setHeader('Content-Length', String(object.contentLength));
  // Keys are unique per job and image: the bytes never change.
  res.setHeader('Cache-Control', 'private, max-age=31536000, immutable');
  for (const [name, value] of Object.entries(extraHeaders)) res.setHeader(name, value);
  await pipeline(object.body, res);
}
