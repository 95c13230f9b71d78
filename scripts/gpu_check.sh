#!/usr/bin/env bash
# One prepared GPU check (issue 6): sequential vs parallel Patcher wall-clock per outer step on
# a GPU through burn's Vulkan backend, plus the same on the GPU machine's CPU cores.
# Expects a stripped, gzipped release binary built with `--features vulkan` at .gpu/patcher.gz
# and the Vulkan loader package (libvulkan1) in .gl/ (see docs/results.md, "GPU check");
# writes logs to $OUT (or ./gpu-out).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
{ ls /usr/local/nvidia/share/vulkan/icd.d/ && cat "$VK_DRIVER_FILES"; ldconfig -p | grep -E "libvulkan|libGLX_nvidia|libGLdispatch"; } 2>&1 | tee -a "$OUT/all.log"
gunzip -c .gpu/patcher.gz > /tmp/patcher; B=/tmp/patcher; chmod +x $B
export RUST_BACKTRACE=1
log() { echo "== $*" | tee -a "$OUT/all.log"; }
run() { local t=$1; shift; log "$* (limit ${t}s)"; local t0=$(date +%s%N)
  timeout "$t" "$@" 2>&1 | tee -a "$OUT/all.log"; local rc=${PIPESTATUS[0]}
  log "rc $rc, $(( ($(date +%s%N) - t0) / 1000000 )) ms"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$OUT/all.log"
nproc | tee -a "$OUT/all.log"
run 60 $B --device vulkan bench train-step --shape tiny --steps 3 --warmup 2
run 100 $B --device vulkan bench train-step --shape smollm2-135m --steps 3 --warmup 2
run 130 $B --device vulkan bench harden --shape smollm2-135m --k 4 --workers 4 --steps 3 --warmup 1
run 170 $B --device cpu bench harden --shape smollm2-135m --k 4 --workers 4 --steps 1 --warmup 1
