#!/usr/bin/env bash
# The real-GPU run (issue 6; results in docs/benchmarks.md "Real GPU"). On a machine with NVIDIA
# GPUs, CUDA's nvcc, cmake and python3, from the repository root:
#
#   bench/gpu/pack                   # on the build machine: bundle segma + the llama.cpp source
#   bench/gpu/run.sh [PHASE...]      # on the GPU machine; phases (default: all, in this order):
#     build      llama-server + ggml-rpc-server with CUDA for the card's architecture
#     inventory  `segma probe` (NVML) against nvidia-smi, kept as a fixture
#     model      a random-weight Llama-3.1-8B-shaped GGUF (q8_0) written by `segma model make-test`
#     serve      segma start on the real GPU → deploy through the API → 1..128 users, direct and
#                through the gateway (bench/gpu/gpu_bench.py)
#     share      two deployments on one GPU through VRAM claims; reported VRAM against NVML
#     multi      (2+ GPUs) links, a tensor-split model on two GPUs next to a one-GPU model
#
# Inputs: .device/segma-linux-x86_64.tar.gz and .device/llama-src.tar.gz (bench/gpu/pack).
# Work files in $SEGMA_GPU_WORK (default /tmp/segma-gpu); results in $OUT (default $WORK/out).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=${SEGMA_GPU_WORK:-/tmp/segma-gpu}
OUT=${OUT:-$WORK/out}
mkdir -p "$WORK" "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
phases=("$@")
[[ ${#phases[@]} -gt 0 ]] || phases=(build inventory model serve share multi)

log() { echo "[$(date +%T)] $*" | tee -a "$OUT/run.log" >&2; }

unpack() {
  if [[ ! -x $WORK/segma/bin/segma ]]; then
    mkdir -p "$WORK/segma"
    tar -xzf .device/segma-linux-x86_64.tar.gz -C "$WORK/segma" --strip-components=1
  fi
  if [[ ! -f $WORK/llama-src/CMakeLists.txt ]]; then
    mkdir -p "$WORK/llama-src"
    tar -xzf .device/llama-src.tar.gz -C "$WORK/llama-src"
  fi
  SEGMA=$WORK/segma/bin/segma
  "$SEGMA" version >&2
}

phase_build() {
  if [[ -x $WORK/llama-build/bin/llama-server ]]; then log "build: cached"; return; fi
  local cc
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
  log "build: llama.cpp with CUDA for sm_${cc} on $(nproc) cores"
  local t0=$SECONDS
  cmake -S "$WORK/llama-src" -B "$WORK/llama-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$cc" -DGGML_NATIVE=OFF -DGGML_RPC=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF >"$OUT/llama-build.log" 2>&1
  cmake --build "$WORK/llama-build" -j "$(nproc)" --target llama-server ggml-rpc-server \
    >>"$OUT/llama-build.log" 2>&1 || { tail -40 "$OUT/llama-build.log" >&2; return 1; }
  log "build: done in $((SECONDS - t0)) s"
  "$WORK/llama-build/bin/llama-server" --version 2>&1 | tail -3 | tee -a "$OUT/run.log" >&2
}

phase_inventory() {
  log "inventory: segma probe against nvidia-smi"
  "$SEGMA" probe --data-dir "$WORK" >"$OUT/probe.json"
  nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.reserved,memory.free,utilization.gpu,temperature.gpu,power.draw,power.limit,mig.mode.current,compute_cap,driver_version \
    --format=csv,noheader,nounits >"$OUT/nvidia-smi.csv"
  nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits \
    >"$OUT/nvidia-smi-apps.csv" || true
  nvidia-smi topo -m >"$OUT/nvidia-smi-topo.txt" 2>&1 || true
  python3 bench/gpu/gpu_bench.py compare-inventory "$OUT/probe.json" "$OUT/nvidia-smi.csv" \
    | tee "$OUT/inventory.md" >&2
}

phase_model() {
  if [[ -f $WORK/llama-8b-q8_0.gguf ]]; then log "model: cached"; return; fi
  log "model: writing a Llama-3.1-8B-shaped q8_0 GGUF"
  local t0=$SECONDS
  "$SEGMA" model make-test --shape 8b --type q8_0 --out "$WORK/llama-8b-q8_0.gguf" \
    --vocab "$WORK/llama-src/models/ggml-vocab-llama-bpe.gguf" | tee -a "$OUT/run.log" >&2
  log "model: done in $((SECONDS - t0)) s"
}

phase_stack() {
  log "$1: bench/gpu/gpu_bench.py $1"
  python3 bench/gpu/gpu_bench.py "$1" --segma "$SEGMA" --work "$WORK" --out "$OUT" \
    --engine-dir "$WORK/llama-build/bin" --model-file "$WORK/llama-8b-q8_0.gguf"
}

unpack
for phase in "${phases[@]}"; do
  case $phase in
    build) phase_build ;;
    inventory) phase_inventory ;;
    model) phase_model ;;
    serve|share|multi) phase_stack "$phase" ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
log "done: ${phases[*]}"
