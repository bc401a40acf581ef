# One image for every process (api, worker, autoscaler, notifier); the command picks the role.
# Production runs the compiled JavaScript in dist/ (npm run build) on Node.js 24 LTS.
#
# GPU image (the default): the runtime stage is NVIDIA's CUDA 12 + cuDNN 9 runtime, the libraries
# onnxruntime-node's CUDA provider links against, and the provider itself is downloaded into
# node_modules at build time (this needs network access to its download host).
#   docker build -t sd-jobs:latest .
# CPU-only image (smaller, no download beyond npm):
#   docker build --build-arg ORT_INSTALL=skip --build-arg RUNTIME_BASE=debian:bookworm-slim -t sd-jobs:cpu .
# Both bases are build arguments, so local images can stand in for registry ones where no registry
# is reachable: `npm run test:containers` makes them with debootstrap (docker import) and the Node
# binary from the npm registry, and builds with --network host (npm ci needs the npm registry).
# No `# syntax=` line: the builder's own Dockerfile frontend is used, nothing is pulled for it.

ARG NODE_IMAGE=node:24-bookworm-slim
ARG RUNTIME_BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${NODE_IMAGE} AS node

# Stage 1: compile the TypeScript to dist/ (needs the dev dependencies: typescript, tsx).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# No dependency needs its install script (package.json allowScripts); onnxruntime-node's is run on purpose below.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY api ./api
COPY assets ./assets
COPY autoscaler ./autoscaler
COPY notifier ./notifier
COPY scripts ./scripts
COPY shared ./shared
COPY worker ./worker
RUN npm run build

# Stage 2: production dependencies, with onnxruntime-node's CUDA provider libraries; its macOS and
# Windows binaries (220 MB) are dropped. (typescript stays: a peer dependency of bull-board's valibot.)
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ARG ORT_INSTALL=cuda12
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && if [ "$ORT_INSTALL" != "skip" ]; then cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL="$ORT_INSTALL" node ./script/install; fi \
 && rm -rf /app/node_modules/onnxruntime-node/bin/napi-v*/darwin /app/node_modules/onnxruntime-node/bin/napi-v*/win32 \
 && npm cache clean --force

# Stage 3: the runtime: Node copied onto the base, the compiled services, a non-root user.
FROM ${RUNTIME_BASE} AS runtime
COPY --from=node /usr/local/bin/node /usr/local/bin/node
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app /models /data \
 && chown app:app /models /data
# WORKER_PROVIDER=webgpu reaches the GPU through Vulkan: the loader (and vulkan-tools, which names the
# adapter in the worker log) here; NVIDIA's Vulkan driver comes from the host when
# NVIDIA_DRIVER_CAPABILITIES includes graphics. AMD and Intel GPUs need Mesa's drivers in the image:
#   docker build --build-arg VULKAN_PACKAGES="libvulkan1 vulkan-tools mesa-vulkan-drivers" .
ARG VULKAN_PACKAGES="libvulkan1 vulkan-tools"
RUN if [ -n "$VULKAN_PACKAGES" ]; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $VULKAN_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8000
COPY --from=deps /app/node_modules ./node_modules
# dist/ carries what the code reads beside itself (pages, kernels.wasm, the tokenizer); root-owned, read-only to the app.
COPY --from=build /app/dist ./dist
COPY package.json ./
USER app
EXPOSE 8000
# No image-wide HEALTHCHECK: each role is checked its own way (`node dist/scripts/healthcheck.js <role>`).
CMD ["node", "--max-old-space-size=192", "dist/api/main.js"]
