import type { Express } from 'express';

/**
 * The routes an Express app actually serves, read from its router stack. The OpenAPI document
 * lists an operation only when its route is mounted, and a test checks the reverse (every mounted
 * API route is documented), so the document follows the code as routes are added.
 */

export interface MountedRoute {
  method: string;
  /** Express syntax: `/v1/jobs/:id`. */
  path: string;
}

interface LayerLike {
  route?: { path: unknown; methods: Record<string, boolean> };
  handle?: { stack?: LayerLike[] };
  rawPath?: unknown;
  slash?: boolean;
}

export function listRoutes(app: Express): MountedRoute[] {
  const routes: MountedRoute[] = [];
  const walk = (stack: LayerLike[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
        for (const p of paths) {
          if (typeof p !== 'string') continue;
          for (const [method, on] of Object.entries(layer.route.methods)) {
            if (on && method !== '_all') routes.push({ method: method.toUpperCase(), path: joinPath(prefix, p) });
          }
        }
      } else if (layer.handle?.stack) {
        const mount = layer.slash || typeof layer.rawPath !== 'string' ? '' : layer.rawPath;
        walk(layer.handle.stack, joinPath(prefix, mount));
      }
    }
  };
  walk((app.router as unknown as { stack: LayerLike[] }).stack, '');
  return routes;
}

const joinPath = (prefix: string, path: string) => (`${prefix}${path}`.replace(/\/{2,}/g, '/') || '/').replace(/(.)\/$/, '$1');

/** `/v1/jobs/:id` → `/v1/jobs/{id}`. */
export const toOpenApiPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

export const routeKey = (method: string, openApiPath: string) => `${method.toUpperCase()} ${openApiPath}`;
