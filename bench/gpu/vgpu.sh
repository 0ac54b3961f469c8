#!/usr/bin/env bash
# libsegma-vgpu on a real GPU (issue 22; results in docs/benchmarks.md "Enforced GPU slicing").
# Needs only this repository's src/vgpu and bench/gpu, cmake, a C++ compiler, nvcc, python3 with
# PyTorch and one NVIDIA GPU; no segma build. From the repository root:
#   bench/gpu/vgpu.sh            # results as JSON lines on stdout and in $OUT/vgpu.jsonl
# Phases: the library (cmake), the CUDA C++ checker (nvcc), PyTorch limited to 10 GiB (default
# allocator, expandable segments, CUDA graph), two processes sharing one slice (one killed),
# cuMemAlloc/cuMemFree latency and an 8B-shaped model's prefill and decoding with and without the
# library, and the compute share (two processes held to 70 % and 30 %, launch latency).
# VGPU_PHASES="latency decode" runs only those.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vgpu-out}
WORK=${VGPU_WORK:-/tmp/vgpu-work}
mkdir -p "$OUT" "$WORK"
export PATH=/usr/local/cuda/bin:$PATH
RES=$OUT/vgpu.jsonl
: >"$RES"
log() { echo "[$(date +%T)] $*" >&2; }
emit() { echo "$1" | tee -a "$RES"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
nvcc --version | tail -1 | tee -a "$OUT/machine.txt"
[[ -f COMMIT ]] && cat COMMIT | tee -a "$OUT/machine.txt"

log "build the library"
cmake -S src/vgpu -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null &&
  cmake --build "$WORK/build" >/dev/null || { log "library build failed"; exit 1; }
LIB=$WORK/build/libsegma-vgpu.so
log "build the checker"
nvcc -O2 -std=c++17 -o "$WORK/vgpu_alloc" bench/gpu/vgpu_alloc.cu -lcuda || exit 1
nvcc -O2 -std=c++17 -o "$WORK/vgpu_spin" bench/gpu/vgpu_spin.cu || exit 1

want() { [[ -z ${VGPU_PHASES:-} || " $VGPU_PHASES " == *" $1 "* ]]; }
LIMIT=10G
limited() {  # runs "$@" held to $LIMIT on device 0, in its own accounting segment
  LD_PRELOAD=$LIB SEGMA_VGPU_LIMITS=0=$LIMIT SEGMA_VGPU_SHM=/segma-vgpu-bench-$1 "${@:2}"
}

if want check; then
log "CUDA C++: runtime, stream-ordered, driver and VMM allocations against 10 GiB"
limited c "$WORK/vgpu_alloc" check 2>"$OUT/check.stderr" | while read -r l; do emit "{\"run\":\"limited\",\"r\":$l}"; done
log "CUDA C++ without the library (control)"
"$WORK/vgpu_alloc" check | while read -r l; do emit "{\"run\":\"unlimited\",\"r\":$l}"; done

fi
if want torch; then
log "PyTorch"
for conf in "" "expandable_segments:True"; do
  r=$(PYTORCH_CUDA_ALLOC_CONF=$conf limited "t$RANDOM" env SEGMA_VGPU_DEBUG=1 python3 bench/gpu/vgpu_torch.py 2>>"$OUT/torch.stderr")
  emit "{\"run\":\"torch limited\",\"r\":${r:-null}}"
done
r=$(python3 bench/gpu/vgpu_torch.py 2>>"$OUT/torch.stderr")
emit "{\"run\":\"torch unlimited\",\"r\":${r:-null}}"

fi
if want nvml; then
log "NVML inside a limited process (pynvml), after 3 GiB allocated through PyTorch"
nv='import torch,pynvml,json; t=torch.empty(3<<30,dtype=torch.uint8,device="cuda"); pynvml.nvmlInit(); h=pynvml.nvmlDeviceGetHandleByIndex(0); m=pynvml.nvmlDeviceGetMemoryInfo(h); print(json.dumps({"total_gib":round(m.total/2**30,3),"used_gib":round(m.used/2**30,3),"free_gib":round(m.free/2**30,3)}))'
r=$(limited n python3 -c "$nv" 2>>"$OUT/nvml.stderr"); emit "{\"run\":\"nvml limited\",\"r\":${r:-null}}"
r=$(python3 -c "$nv" 2>>"$OUT/nvml.stderr"); emit "{\"run\":\"nvml unlimited\",\"r\":${r:-null}}"
fi
if want shared; then
log "two processes, one slice; the holder is killed"
hold='import torch,sys,time; t=torch.empty(6<<30,dtype=torch.uint8,device="cuda"); t.fill_(1); torch.cuda.synchronize(); print("held",flush=True); time.sleep(600)'
try='import torch,json; r={}
for g in (6,3):
    try:
        t=torch.empty(g<<30,dtype=torch.uint8,device="cuda"); r[str(g)]="ok"; del t; torch.cuda.empty_cache()
    except torch.OutOfMemoryError: r[str(g)]="OutOfMemoryError"
print(json.dumps(r))'
# Started directly (not through the function) so that $! is python itself.
LD_PRELOAD=$LIB SEGMA_VGPU_LIMITS=0=$LIMIT SEGMA_VGPU_SHM=/segma-vgpu-bench-shared \
  python3 -c "$hold" >"$WORK/holder.out" 2>&1 &
holder=$!
for _ in $(seq 1 120); do grep -q held "$WORK/holder.out" && break; sleep 0.5; done
before=$(limited shared python3 -c "$try" 2>/dev/null)
kill -9 $holder; wait $holder 2>/dev/null
after=$(limited shared python3 -c "$try" 2>/dev/null)
emit "{\"run\":\"shared slice\",\"while_other_holds_6gib\":${before:-null},\"after_other_killed\":${after:-null}}"

fi
if want latency; then
log "cuMemAlloc/cuMemFree latency, 1 MiB (5,000 a process) and 64 MiB (1,000), alternating 7 times"
for i in 1 2 3 4 5 6 7; do
  for bytes in 1048576 67108864; do
    n=$(( bytes > 1048576 ? 1000 : 5000 ))
    r=$("$WORK/vgpu_alloc" latency $n $bytes); emit "{\"run\":\"latency without\",\"r\":$r}"
    r=$(LIMIT=100G limited "l$i" "$WORK/vgpu_alloc" latency $n $bytes); emit "{\"run\":\"latency with\",\"r\":$r}"
  done
done
python3 - "$RES" <<'PY' | tee "$OUT/latency_summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if '"latency' in l]
for b in (1048576, 67108864):
    for what in ("alloc", "free"):
        m = {k: statistics.median(r["r"][what + "_mean_us"] for r in runs
                                  if r["run"] == "latency " + k and r["r"]["bytes"] == b)
             for k in ("without", "with")}
        print(f"{b >> 20} MiB {what}: median of per-process means {m['without']:.1f} us without, "
              f"{m['with']:.1f} us with ({m['with'] - m['without']:+.1f} us)")
PY
fi
if want decode; then
log "inference: an 8B-shaped model (transformers, random bf16 weights), 1/8/32 sequences, held to 40 GiB or not, alternating 3 times"
for i in 1 2 3; do
  r=$(python3 bench/gpu/vgpu_decode.py 2>>"$OUT/decode.stderr"); emit "{\"run\":\"decode without\",\"r\":${r:-null}}"
  r=$(LIMIT=40G limited "d$i" python3 bench/gpu/vgpu_decode.py 2>>"$OUT/decode.stderr"); emit "{\"run\":\"decode with\",\"r\":${r:-null}}"
done
python3 - "$RES" <<'PY' | tee "$OUT/decode_summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if '"decode' in l]
for b in ("1", "8", "32"):
    for what in ("prefill_ms", "tokens_per_s_per_seq"):
        m = {k: statistics.median(r["r"][b][what] for r in runs if r["run"] == "decode " + k and r["r"])
             for k in ("without", "with")}
        print(f"{b} seq {what}: median {m['without']:.2f} without, {m['with']:.2f} with "
              f"({100 * (m['with'] / m['without'] - 1):+.2f} %)")
PY
fi
if want compute; then
SECS=${COMPUTE_SECONDS:-30}
# Two loads (bench/gpu/vgpu_spin.cu): "load" spins on the GPU's clock (ends on time even while
# another process has the GPU, so it overstates what a process got under time-slicing), "work"
# runs a fixed chain of FMAs (its rate is the SM time the process got).
# The fixed-work kernel's length is calibrated once, alone, to 1 ms.
ITERS=$("$WORK/vgpu_spin" calibrate 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["iters"])')
log "compute: the fixed-work kernel runs $ITERS FMAs per thread (1 ms alone)"
for mode in load work; do
args() { if [[ $mode == work ]]; then echo "$1 $ITERS"; else echo "$1"; fi; }
run_load() { "$WORK/vgpu_spin" "$mode" $(args "$1"); }
# Held to a share: its own instance (segment), the watcher's trace on stderr.
shared() {  # shared <percent> <instance> <seconds>
  LD_PRELOAD=$LIB SEGMA_VGPU_COMPUTE=0=$1 SEGMA_VGPU_SHM=/segma-vgpu-bench-$2 SEGMA_VGPU_DEBUG=1 \
    "$WORK/vgpu_spin" "$mode" $(args "$3") 2>"$OUT/compute-$2.stderr"
}
log "compute ($mode): one process alone, without the library (the reference)"
r=$(run_load 10); emit "{\"run\":\"compute alone\",\"mode\":\"$mode\",\"r\":${r:-null}}"
log "compute ($mode): two processes, no library"
run_load "$SECS" >"$WORK/u1" & p1=$!; run_load "$SECS" >"$WORK/u2"; wait $p1
emit "{\"run\":\"compute two unlimited\",\"mode\":\"$mode\",\"a\":$(cat "$WORK/u1"),\"b\":$(cat "$WORK/u2")}"
log "compute ($mode): two processes, one held to 70 %, one to 30 %"
shared 70 "$mode-c70" "$SECS" >"$WORK/s70" & p1=$!; shared 30 "$mode-c30" "$SECS" >"$WORK/s30"; wait $p1
emit "{\"run\":\"compute 70+30\",\"mode\":\"$mode\",\"a70\":$(cat "$WORK/s70"),\"b30\":$(cat "$WORK/s30")}"
log "compute ($mode): one process held to 30 %, alone on the GPU"
r=$(shared 30 "$mode-solo30" "$SECS"); emit "{\"run\":\"compute 30 alone\",\"mode\":\"$mode\",\"r\":${r:-null}}"
done
log "compute: empty-kernel launch latency without the library, with it (no share), with a share"
for i in 1 2 3; do
  r=$("$WORK/vgpu_spin" latency 20000); emit "{\"run\":\"launch without\",\"r\":$r}"
  r=$(LD_PRELOAD=$LIB "$WORK/vgpu_spin" latency 20000); emit "{\"run\":\"launch library\",\"r\":$r}"
  r=$(LD_PRELOAD=$LIB SEGMA_VGPU_COMPUTE=0=99 SEGMA_VGPU_SHM=/segma-vgpu-bench-lat$i \
      "$WORK/vgpu_spin" latency 20000); emit "{\"run\":\"launch share\",\"r\":$r}"
done
python3 - "$RES" <<'PY' | tee "$OUT/compute_summary.txt"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
get = lambda name: [r for r in runs if r["run"] == name]
for mode in ("load", "work"):
    of = lambda name: [r for r in get(name) if r.get("mode", "load") == mode]
    if not of("compute alone"):
        continue
    alone = of("compute alone")[0]["r"]["per_s"]
    print(f"[{mode}] alone: {alone:.1f} kernels/s (reference)")
    for r in of("compute two unlimited"):
        print(f"[{mode}] two unlimited: " + ", ".join(f"{k} {r[k]['per_s']:.1f}/s = {100 * r[k]['per_s'] / alone:.1f} %" for k in ("a", "b")))
    for r in of("compute 70+30"):
        for k, claim in (("a70", 70), ("b30", 30)):
            x = r[k]
            print(f"[{mode}] held to {claim} % (with the other): {100 * x['per_s'] / alone:.1f} % over the run, "
                  f"{100 * x['per_s_second_half'] / alone:.1f} % over its second half")
    for r in of("compute 30 alone"):
        x = r["r"]
        print(f"[{mode}] held to 30 % alone: {100 * x['per_s'] / alone:.1f} % over the run, "
              f"{100 * x['per_s_second_half'] / alone:.1f} % over its second half")
for k in ("without", "library", "share"):
    xs = [r["r"] for r in get("launch " + k)]
    print(f"empty launch {k}: median of means {statistics.median(x['mean_us'] for x in xs):.3f} us, "
          f"median of medians {statistics.median(x['median_us'] for x in xs):.3f} us")
PY
# What the watcher read from NVML's per-process samples: the mean of its readings (each the
# instance's SM utilisation over the new samples), and how many of the device's new samples were
# of the instance's own processes (under time-slicing NVML names one process per sample).
for f in "$OUT"/compute-*.stderr; do
  [[ -s $f ]] || continue
  awk -v name="$(basename "$f" .stderr)" '
    / util -?[0-9]+ / {
      for (i = 1; i <= NF; i++) {
        if ($i == "samples") seen += $(i + 1)
        if ($i == "ours") ours += $(i + 1)
        if ($i == "util" && $(i + 1) >= 0) { sum += $(i + 1); n++ }
      }
    }
    END { printf "%s: %d readings, mean util %.1f %%; %d of %d samples were its own (%.1f %%)\n",
          name, n, n ? sum / n : -1, ours, seen, seen ? 100 * ours / seen : -1 }' "$f" |
    tee -a "$OUT/compute_summary.txt"
done
fi
log "done"
