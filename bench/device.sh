#!/usr/bin/env bash
# On a lent GPU machine, after bench/device_prepare.sh here (see README, "Measuring on a GPU"):
# the WebGPU benchmark, then nanoGPT's Shakespeare run for SECONDS_BUDGET seconds (180), in
# about 6 minutes. The figures go to $OUT (the device's folder that comes back; out/device when
# unset). BENCH_ARGS and NANOGPT_ARGS add options (a smoke test on a software adapter:
# BENCH_ARGS=--quick BENCH_TIMEOUT=900 NANOGPT_ARGS="--batch 1 --eval-every 2 --max-windows 1").
set -uo pipefail
cd "$(dirname "$0")/.."
# the loaders, only where the machine has none (never over a system's own; grep reads the whole
# listing: with -q it stops early, ldconfig dies of SIGPIPE, and pipefail would say "none")
if ! ldconfig -p | grep libvulkan.so.1 >/dev/null; then
  for f in .device/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
# NVIDIA's driver by name, for new loaders (VK_DRIVER_FILES) and old ones (VK_ICD_FILENAMES)
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nvidia_icd" ]; then
  export VK_DRIVER_FILES=$nvidia_icd VK_ICD_FILENAMES=$nvidia_icd
fi
if ! command -v deno >/dev/null; then
  mkdir -p /tmp/baregpt-deno
  bin=/tmp/baregpt-deno/deno
  # xz, or Python's lzma where the image has no xz
  xz -dc .device/deno.xz >"$bin" 2>/dev/null ||
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      .device/deno.xz "$bin"
  chmod +x "$bin"
  export PATH=/tmp/baregpt-deno:$PATH
fi
if ! deno --version >/dev/null; then
  echo "error: no Deno: run bench/device_prepare.sh first, and carry .device" >&2
  exit 2
fi
XDG_RUNTIME_DIR=$(mktemp -d)
export XDG_RUNTIME_DIR
out=${OUT:-out/device}
mkdir -p "$out"
{
  date -u
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  deno --version | head -1
  nproc
} 2>&1 | tee "$out/machine.txt"
# shellcheck disable=SC2086 # the extra options are words
timeout "${BENCH_TIMEOUT:-170}" deno task bench --tier webgpu --json "$out/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.md"
# shellcheck disable=SC2086
timeout $((${SECONDS_BUDGET:-180} + 120)) deno task bench:nanogpt --seconds "${SECONDS_BUDGET:-180}" \
  --json "$out/nanogpt.json" ${NANOGPT_ARGS:-} 2>&1 | tee "$out/nanogpt.md"
