import express, { type Express } from 'express';
import type { AppDeps } from './deps.js';
import { dashboardRouter } from './dashboard.js';
import { requireApiKey } from './auth.js';
import { errorHandler, HttpError, sendError } from './http-errors.js';
import { requestLogging } from './request-logging.js';
import { generateRouter } from './routes/generate.js';
import { healthRouter } from './routes/health.js';
import { jobsRouter } from './routes/jobs.js';
import { webhookSecretsRouter } from './routes/webhook-secrets.js';
import { workersRouter } from './routes/workers.js';
import { limitBy } from './tenant-limits.js';
import { modelsRouter } from './routes/models.js';
import { metricsRouter } from './routes/metrics.js';
import { openApiRouter, pagesRouter } from './routes/pages.js';

export type { AppDeps } from './deps.js';


export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  // Only a configured proxy's X-Forwarded-* headers count (links, client addresses); none by default.
  app.set('trust proxy', deps.config.trustProxy);
  app.use(requestLogging(deps.logger));
  if (deps.metrics) app.use(deps.metrics.httpMiddleware);
  // API keys guard every /v1 route and the synchronous alias; health, metrics and pages stay open.
  app.use(['/v1', '/dreambooth'], requireApiKey(deps.config, deps.logger), limitBy('request', deps.tenants?.limiter));
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
  app.use(workersRouter(deps));
  app.use(webhookSecretsRouter(deps));
  app.use(modelsRouter(deps));
  if (deps.metrics) app.use(metricsRouter(deps.metrics));
  if (deps.monitor && deps.config.admin) app.use(dashboardRouter(deps.monitor, deps.config.admin));
  app.use(openApiRouter(deps, app));
  app.use(pagesRouter(deps));
  app.use((req, res) => {
    sendError(res, new HttpError(404, 'not_found', `No route for ${req.method} ${req.path}.`));
  });
  app.use(errorHandler(deps.logger));
  return app;
}
