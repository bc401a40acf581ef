import express, { type Express } from 'express';
import type { AppDeps } from './deps.js';
import { errorHandler, HttpError, sendError } from './http-errors.js';
import { generateRouter } from './routes/generate.js';
import { healthRouter } from './routes/health.js';
import { jobsRouter } from './routes/jobs.js';

export type { AppDeps } from './deps.js';


export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(express.json({ limit: deps.config.limits.maxBodyBytes, strict: false, type: ['application/json', 'application/*+json'] }));
  app.use((req, _res, next) => {
    // A POST with another content type would otherwise arrive as an empty body.
    if (req.method === 'POST' && req.path === '/v1/jobs' && !req.is(['application/json', 'application/*+json'])) {
      next(new HttpError(415, 'unsupported_media_type', 'Send the job as application/json.', 'content-type'));
      return;
    }
    next();
  });
  app.use(healthRouter(deps));
  app.use(jobsRouter(deps));
  app.use(generateRouter(deps));
  app.use((req, res) => {
    sendError(res, new HttpError(404, 'not_found', `No route for ${req.method} ${req.path}.`));
  });
  app.use(errorHandler(deps.logger));
  return app;
}
