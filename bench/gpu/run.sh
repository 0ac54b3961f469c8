#!/usr/bin/env bash
# The real-GPU run (issue 6; results in docs/benchmarks.md "Real GPU"). On a machine with NVIDIA
# GPUs, CUDA's nvcc, cmake and python3, from the repository root:
#
#   bench/gpu/pack                   # on the build machine: bundle segma + the llama.cpp source
#   bench/gpu/run.sh [PHASE...]      # on the GPU machine; phases (default: all, in this order):
#     build      llama-server + ggml-rpc-server with CUDA for the card's architecture
#     inventory  `segma probe` (NVML) against nvidia-smi, kept as a fixture
#     model      a random-weight Llama-3.1-8B-shaped GGUF (q8_0) written by `segma model make-test`
#     model-f16  the same layout in f16; model-32b: a 32B layout (Qwen2.5-32B dimensions) in q8_0
#     tune-8b-q8_0, tune-8b-check (1 and 32 users only), tune-8b-f16, tune-32b-q8_0, tune-8b-kvu (-kvu: one KV buffer for all slots)
#                segma's llama.cpp choices against llama.cpp's defaults (gpu_bench.py tune), each
#                deployment's engine log checked for "offloaded N/N layers to GPU"
#     save-build the CUDA build of llama.cpp as $OUT/llama-build.tar.gz.NN (15 MiB parts), which
#                a later run carries in .device/ instead of building again
#     serve      segma start on the real GPU → deploy through the API → 1..128 users, direct and
#                through the gateway (bench/gpu/gpu_bench.py)
#     share      two deployments on one GPU through VRAM claims; reported VRAM against NVML
#     multi      (2+ GPUs) links, a tensor-split model on two GPUs next to a one-GPU model
#     compute    two deployments on one GPU held to 70 % and 30 % of its compute, alone and together
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
  # A carried build needs only the vocabulary of the source (call it with a llama-src.tar.gz
  # holding just models/ggml-vocab-llama-bpe.gguf to stay under the device's upload limit).
  if [[ ! -f $WORK/llama-src/CMakeLists.txt && ! -f $WORK/llama-src/models/ggml-vocab-llama-bpe.gguf ]]; then
    mkdir -p "$WORK/llama-src"
    tar -xzf .device/llama-src.tar.gz -C "$WORK/llama-src"
  fi
  SEGMA=$WORK/segma/bin/segma
  "$SEGMA" version >&2
}

phase_build() {
  if [[ -x $WORK/llama-build/bin/llama-server ]]; then log "build: cached"; return; fi
  if compgen -G ".device/llama-build.tar.gz.*" >/dev/null; then
    mkdir -p "$WORK/llama-build"
    cat .device/llama-build.tar.gz.* | tar -xz -C "$WORK/llama-build"
    if "$WORK/llama-build/bin/llama-server" --version >/dev/null 2>&1; then
      log "build: carried in .device/"
      return
    fi
    rm -rf "$WORK/llama-build"
  fi
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

# make_model FILE SHAPE TYPE
make_model() {
  if [[ -f $WORK/$1 ]]; then log "model $1: cached"; return; fi
  log "model: writing $1 ($2, $3)"
  local t0=$SECONDS
  "$SEGMA" model make-test --shape "$2" --type "$3" --out "$WORK/$1.part" \
    --vocab "$WORK/llama-src/models/ggml-vocab-llama-bpe.gguf" | tee -a "$OUT/run.log" >&2
  mv "$WORK/$1.part" "$WORK/$1"
  log "model $1: done in $((SECONDS - t0)) s"
}

phase_model() { make_model llama-8b-q8_0.gguf 8b q8_0; }

phase_save_build() {
  (cd "$WORK/llama-build" && tar -c bin/llama-server bin/ggml-rpc-server bin/*.so* 2>/dev/null) |
    gzip -6 | split -b 15M -d - "$OUT/llama-build.tar.gz."
  ls -la "$OUT"/llama-build.tar.gz.* >&2
}

phase_tune() {
  log "tune $1: bench/gpu/gpu_bench.py tune --plan $1"
  python3 bench/gpu/gpu_bench.py tune --plan "$1" --segma "$SEGMA" --work "$WORK" --out "$OUT" \
    --engine-dir "$WORK/llama-build/bin" --model-file "$WORK/$2"
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
    model-f16) make_model llama-8b-f16.gguf 8b f16 ;;
    model-32b) make_model llama-32b-q8_0.gguf 32b q8_0 ;;
    serve|share|multi|compute) phase_stack "$phase" ;;
    tune-8b-q8_0) phase_tune 8b-q8_0 llama-8b-q8_0.gguf ;;
    tune-8b-check) phase_tune 8b-check llama-8b-q8_0.gguf ;;
    tune-8b-vgpu) phase_tune 8b-vgpu llama-8b-q8_0.gguf ;;
    tune-8b-f16) phase_tune 8b-f16 llama-8b-f16.gguf ;;
    tune-8b-kvu) phase_tune 8b-kvu llama-8b-q8_0.gguf ;;
    tune-32b-q8_0) phase_tune 32b-q8_0 llama-32b-q8_0.gguf ;;
    save-build) phase_save_build ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
log "done: ${phases[*]}"
