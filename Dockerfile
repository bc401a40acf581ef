# syntax=docker/dockerfile:1
# One image for every process (api, worker, autoscaler); the command picks the role.
# onnxruntime-node's CUDA 12 provider libraries are installed at build time (needs network
# access to their download host); build with --build-arg ORT_INSTALL=skip for a CPU-only image.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
ARG ORT_INSTALL=cuda12
ENV ONNXRUNTIME_NODE_INSTALL=${ORT_INSTALL}
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && if [ "$ORT_INSTALL" != "skip" ]; then cd node_modules/onnxruntime-node && node ./script/install; fi

FROM node:20-bookworm-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8000
# tsx runs the TypeScript sources directly; it is a runtime dependency of the image.
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY scripts ./scripts
COPY assets ./assets
RUN npm install --no-save --no-audit --no-fund tsx@4 \
 && mkdir -p /models /data && chown -R node:node /models /data
USER node
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "--import", "tsx", "api/main.ts"]
