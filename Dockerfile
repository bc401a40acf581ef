# syntax=docker/dockerfile:1
# One image for every process (api, worker, autoscaler, notifier); the command picks the role.
#
# GPU image (the default): the runtime stage is NVIDIA's CUDA 12 + cuDNN 9 runtime, the libraries
# onnxruntime-node's CUDA provider links against, and the provider itself is downloaded into
# node_modules at build time (this needs network access to its download host).
# CPU-only image (smaller, no download beyond npm):
#   docker build --build-arg ORT_INSTALL=skip --build-arg RUNTIME_BASE=debian:bookworm-slim .

ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUNTIME_BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

FROM ${NODE_IMAGE} AS node

# Stage 1: production dependencies, with onnxruntime-node's CUDA provider libraries.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ARG ORT_INSTALL=cuda12
ENV ONNXRUNTIME_NODE_INSTALL=${ORT_INSTALL}
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && if [ "$ORT_INSTALL" != "skip" ]; then cd node_modules/onnxruntime-node && node ./script/install; fi \
 && npm cache clean --force

# Stage 2: the runtime: Node copied onto the CUDA base, sources run by tsx, a non-root user.
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
# Everything .dockerignore lets through (service folders, assets, package files); root-owned, read-only to the app.
COPY . .
USER app
EXPOSE 8000
# No image-wide HEALTHCHECK: only the api role serves HTTP; docker-compose.yml checks each service its own way.
CMD ["node", "--import", "tsx", "api/main.ts"]
