import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router, type Express } from 'express';
import type { AppDeps } from '../deps.js';
import { routeName } from '../metrics.js';
import { buildOpenApiDocument } from '../openapi.js';
import { listRoutes, routeKey, toOpenApiPath } from '../route-table.js';

/**
 * What people open in a browser: the playground at `/`, the API docs at `/docs` (Swagger UI from
 * node_modules, no CDN) and the OpenAPI document they read.
 */

const PUBLIC_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'public');
const SWAGGER_DIR = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

/**
 * Pages load scripts from this origin only; images are blob: URLs the page made from this
 * origin's answers, or, when images redirect to presigned storage URLs, the storage's own.
 */
function pageCsp(imagesElsewhere: boolean): string {
  const storage = imagesElsewhere ? ' https: http:' : '';
  return [
    "default-src 'self'",
    `img-src 'self' blob: data:${storage}`,
    `connect-src 'self'${storage}`,
    "style-src 'self' 'unsafe-inline'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export function openApiRouter(deps: AppDeps, app: Express): Router {
  const router = Router();
  let document: unknown;
  router.get('/openapi.json', (_req, res) => {
    // Built on first use, when every router is mounted.
    document ??= buildOpenApiDocument(
      { config: deps.config, mounted: new Set(listRoutes(app).map((r) => routeKey(r.method, toOpenApiPath(r.path)))) },
      VERSION,
    );
    res.setHeader('Cache-Control', 'no-cache');
    res.json(document);
  });
  return router;
}

export function pagesRouter(deps: Pick<AppDeps, 'presignImages'>): Router {
  const router = Router();
  const csp = pageCsp(deps.presignImages === true);
  const page = (file: string) => (_req: express.Request, res: express.Response) => {
    res.setHeader('Content-Security-Policy', csp);
    res.setHeader('Cache-Control', 'no-cache');
    res.sendFile(path.join(PUBLIC_DIR, file));
  };
  router.get('/', page('index.html'));
  router.get('/docs', page('docs.html'));
  router.use('/docs/assets', routeName('/docs/assets'), express.static(SWAGGER_DIR, { index: false, fallthrough: true, maxAge: '1d' }));
  router.use(
    routeName('(static)'),
    express.static(PUBLIC_DIR, {
      index: false,
      fallthrough: true,
      maxAge: 0,
      setHeaders: (res, file) => {
        if (file.endsWith('.html')) res.setHeader('Content-Security-Policy', csp);
      },
    }),
  );
  return router;
}
