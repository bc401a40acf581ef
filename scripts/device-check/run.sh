#!/usr/bin/env bash
# The device check for a lent GPU machine (the device tool), in one call of a few minutes:
#   here:    bash scripts/device-check/pack.sh        # builds .device-kit/ (about 40 MiB, git-ignored)
#   device:  run(command="bash scripts/device-check/run.sh", carry=[".device-kit"], timeout_s=420)
# It reports the GPU (nvidia-smi), the Vulkan loader and driver manifests (ICDs) and the devices
# Vulkan lists (vulkaninfo), the WebGPU adapter Dawn takes and whether it runs float16 shaders, and
# the tiny model's timings at 512 px per provider (cpu; webgpu NHWC and NCHW; cuda where
# onnxruntime-node's CUDA libraries exist), each image compared with the CPU's; the report and its
# JSON land in $OUT. Runs here too (on lavapipe) to try the kit: OUT=/tmp/dc bash scripts/device-check/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
kit=${DEVICE_KIT:-.device-kit}
out=${OUT:-$(mktemp -d)}
work=$(mktemp -d /tmp/device-check.XXXXXX)
step() { printf '\n== %s\n' "$*"; }
[ -f "$kit/node.tar.xz" ] || { echo "no $kit/node.tar.xz: run scripts/device-check/pack.sh first and carry $kit"; exit 2; }

started=$(date +%s)
tar -xJf "$kit/node.tar.xz" -C "$work" && tar -xJf "$kit/app.tar.xz" -C "$work" || exit 2
# Debian's loader and vulkaninfo under $work/vk, never over the machine's own files.
if command -v dpkg-deb >/dev/null; then
  for deb in "$kit"/debs/*.deb; do dpkg-deb -x "$deb" "$work/vk"; done
else
  echo "no dpkg-deb: the kit's Vulkan loader and vulkaninfo stay packed"
fi
export PATH="$work/node/bin:$work/vk/usr/bin:$PATH"
export LD_LIBRARY_PATH="$work/vk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The NVIDIA driver's libraries (its Vulkan ICD among them) in its mounted folder.
for lib in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d "$lib" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$lib"; done
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
echo "kit unpacked in $(( $(date +%s) - started )) s: node $(node --version), $(command -v vulkaninfo >/dev/null && echo "vulkaninfo there" || echo "no vulkaninfo")"

step GPU
nvidia-smi --query-gpu=index,name,driver_version,memory.total,pci.bus_id --format=csv 2>/dev/null || echo "nvidia-smi: not available"
nvidia-smi -q 2>/dev/null | grep -iE '^\s*(CUDA Version|Driver Version)' | sort -u

step "Vulkan driver manifests (ICDs)"
found=0
for dir in /etc/vulkan/icd.d /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d; do
  for manifest in "$dir"/*.json; do
    [ -f "$manifest" ] || continue
    found=1
    library=$(grep -o '"library_path"[^,}]*' "$manifest" | cut -d'"' -f4)
    where=$(ldconfig -p | grep -m1 "${library##*/}" | sed 's/.*=> //')
    for lib in ${LD_LIBRARY_PATH//:/ }; do [ -z "$where" ] && [ -f "$lib/${library##*/}" ] && where="$lib/${library##*/}"; done
    [ -f "$library" ] && where=$library
    echo "$manifest: $library (${where:-library NOT found})"
  done
done
[ "$found" = 1 ] || echo "none in the standard places"
# The NVIDIA driver's own manifest, where the loader does not look by itself (the device tool's notes).
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nvidia_icd" ] && ! ls /etc/vulkan/icd.d/nvidia*.json /usr/share/vulkan/icd.d/nvidia*.json >/dev/null 2>&1; then
  export VK_ADD_DRIVER_FILES=$nvidia_icd
  echo "VK_ADD_DRIVER_FILES=$VK_ADD_DRIVER_FILES"
fi

step "vulkaninfo --summary (devices)"
vulkaninfo --summary 2>&1 | sed -n '/^Devices:/,$p' | grep -E 'GPU[0-9]|deviceName|deviceType|driverName|driverInfo|apiVersion' || vulkaninfo --summary 2>&1 | tail -5

step check
DEVICE_CHECK_JSON="$out/device-check.json" node "$work/app/bin/device-check.mjs" 2>&1 | grep -v 'artificially reduced' | tee "$out/device-check.txt"
status=${PIPESTATUS[0]}
echo "device check: exit $status after $(( $(date +%s) - started )) s in all"
rm -rf "$work"
exit "$status"
