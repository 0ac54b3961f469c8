#!/usr/bin/env python3
"""The segma parts of the real-GPU run (bench/gpu/run.sh calls this; python3 stdlib only).

  gpu_bench.py compare-inventory PROBE_JSON NVIDIA_SMI_CSV
  gpu_bench.py serve|share|multi|compute --segma BIN --work DIR --out DIR --engine-dir DIR --model-file F
  gpu_bench.py tune --plan NAME --segma BIN --work DIR --out DIR --engine-dir DIR --model-file F

serve: `segma start` on the real GPU, one deployment of the 8B model through the REST API, then
`segma bench load` at 1..128 concurrent streaming users, straight to the engine and through the
gateway (same prompts shape, distinct prompts). share: a second deployment on the same GPU, both
serving, the worker's reported VRAM against nvidia-smi. multi: with 2+ GPUs, the links the worker
reports and a tensor-split deployment on two GPUs next to a one-GPU deployment. compute: two
deployments on one GPU claiming 70 % and 30 % of its compute (gpu_compute_percent), alone and
under contention.
tune: segma's llama.cpp choices (issue 14) on one model file, against llama.cpp's own defaults and
variants passed as backend_parameters, at 1..128 users; every deployment's engine log is checked
for the devices it used and "offloaded N/N layers to GPU" (the run fails otherwise), and each row
gives the share of the card's memory bandwidth that reading the weights once per step takes.
Each writes a markdown section and the raw JSON to --out.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from segma_stack import MiB, Stack, wait  # noqa: E402
# A dry run of the scripts on a CPU machine with the tiny test model (bench/gpu/README.md).
QUICK = os.environ.get("SEGMA_GPU_BENCH_QUICK") == "1"
# Extra `segma bench load` flags of every run (e.g. ["--endpoint", "completions"]). Chat works:
# the test model never emits control tokens or broken UTF-8 (src/scheduler/estimate/test_model.cc),
# which made llama.cpp's chat output parser end streams with an error.
ENDPOINT_FLAGS = []


# ---------------------------------------------------------------------------------------------
# Inventory: segma probe (NVML through our dlopen'ed binding) against nvidia-smi.

def compare_inventory(probe_path, smi_path):
    probe = json.load(open(probe_path))
    fields = ["index", "uuid", "name", "memory.total", "memory.used", "memory.reserved",
              "memory.free", "utilization.gpu", "temperature.gpu", "power.draw", "power.limit",
              "mig.mode.current", "compute_cap", "driver_version"]
    rows = [dict(zip(fields, [c.strip() for c in r])) for r in csv.reader(open(smi_path)) if r]
    gpus = {g["index"]: g for g in probe["gpus"] if "parent_index" not in g}
    lines = ["| GPU | field | segma probe (NVML) | nvidia-smi | agrees |", "|---|---|---|---|---|"]
    ok = True

    def row(i, field, ours, theirs, agrees):
        nonlocal ok
        ok = ok and agrees
        lines.append(f"| {i} | {field} | {ours} | {theirs} | {'yes' if agrees else 'NO'} |")

    for r in rows:
        i = int(r["index"])
        g = gpus.get(i)
        if g is None:
            row(i, "present", "missing", "present", False)
            continue
        row(i, "name", g["name"], r["name"], g["name"] == r["name"])
        row(i, "uuid", g["uuid"], r["uuid"], g["uuid"] == r["uuid"])
        row(i, "compute capability", g["compute_capability"], r["compute_cap"],
            g["compute_capability"] == r["compute_cap"])
        total = g["memory_total"] // MiB
        row(i, "memory total MiB", total, r["memory.total"], abs(total - int(r["memory.total"])) <= 1)
        # NVML's used = total - free includes the driver's reservation; nvidia-smi splits it out.
        used = g["memory_used"] // MiB
        smi_used = int(r["memory.used"]) + int(r["memory.reserved"] or 0)
        row(i, "memory used MiB (incl. reserved)", used, smi_used, abs(used - smi_used) <= 64)
        row(i, "memory used by other processes MiB", g["memory_used_external"] // MiB,
            r["memory.used"], True)
        row(i, "temperature C", g["temperature"], r["temperature.gpu"],
            abs(g["temperature"] - float(r["temperature.gpu"])) <= 3)
        row(i, "power W", round(g["power"], 1), r["power.draw"],
            abs(g["power"] - float(r["power.draw"])) <= max(15.0, 0.2 * float(r["power.draw"])))
        row(i, "power limit W", round(g["power_limit"]), r["power.limit"],
            abs(g["power_limit"] - float(r["power.limit"])) <= 1)
        row(i, "utilization %", g["utilization"], r["utilization.gpu"], True)
        row(i, "MIG", "enabled" if g["mig_enabled"] else "disabled", r["mig.mode.current"],
            g["mig_enabled"] == (r["mig.mode.current"] == "Enabled"))
        row(i, "links", json.dumps(g.get("links", {})), "see nvidia-smi topo -m", True)
    row("-", "driver", probe.get("driver_version"), rows[0]["driver_version"] if rows else "",
        bool(rows) and probe.get("driver_version") == rows[0]["driver_version"])
    print(f"segma probe: gpu_source={probe.get('gpu_source')}, {len(gpus)} GPU(s); nvidia-smi: "
          f"{len(rows)} GPU(s); all compared fields agree: {'yes' if ok else 'NO'}\n")
    print("\n".join(lines))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# The stack.

def smi(query):
    res = subprocess.run(["nvidia-smi", f"--query-{query}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True)
    return [[c.strip() for c in r] for r in csv.reader(res.stdout.splitlines()) if r]


def write(args, name, text):
    with open(os.path.join(args.out, name), "w") as f:
        f.write(text)
    sys.stderr.write(text + "\n")


def serve(args):
    st = Stack(args)
    st.start()
    try:
        gpus = st.gpus()
        # Enough slots and context for the largest run: 128 users x (prompt + 256 tokens).
        # context_length is per sequence: llama.cpp gets -c 2048 x 128 slots.
        model, inst = (deploy_checked(st, "llama-8b", ctx=512, parallel=4) if QUICK else
                       deploy_checked(st, "llama-8b", ctx=2048, parallel=128))
        direct = f"http://127.0.0.1:{inst['port']}"
        gateway = st.api.base
        lines = [
            f"GPU: {gpus[0]['name']} ({gpus[0]['memory_total'] // MiB} MiB), detected by the worker "
            f"through NVML; model: Llama-3.1-8B layout, q8_0, random weights "
            f"({os.path.getsize(args.model_file) / 2**30:.1f} GiB), llama.cpp CUDA, "
            f"`--parallel 128 -c 262144` (2,048 tokens per sequence); deployed through POST /v2/models, RUNNING after "
            f"{inst['seconds_to_running']} s on GPU(s) {inst['gpu_indexes']}.",
            "",
            "Streaming chat completions, 128 output tokens each (`ignore_eos`), distinct prompts "
            "of 200 words (~260 tokens), `segma bench load`:",
            "",
            "| users | path | requests | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | tok/s per user p50 | "
            "tok/s per user min | total tok/s | errors |",
            "|---|---|---|---|---|---|---|---|---|---|"]
        results = []
        runs = [(1, 2), (2, 4)] if QUICK else [(1, 4), (8, 16), (16, 32), (32, 64), (32, 64),
                                               (64, 64), (128, 128)]
        for users, n in runs:
            for path, url, key in [("direct", direct, st.engine_key(inst["id"])),
                                   ("gateway", gateway, st.key)]:
                if users > 32 and path == "direct":
                    continue
                r = st.load(url, "llama-8b", users, n, key=key, tag=f"{path}-c{users}",
                            max_tokens=16 if QUICK else 128, extra=ENDPOINT_FLAGS)
                results.append(r)
                lines.append(
                    f"| {users} | {path} | {r['ok']} | {r['ttft_ms']['p50']:.1f} | "
                    f"{r['ttft_ms']['p95']:.1f} | {r['itl_ms']['p50']:.2f} | "
                    f"{r['tokens_per_s_per_user']['p50']:.1f} | "
                    f"{r['tokens_per_s_per_user']['min']:.1f} | {r['output_tokens_per_s']:.0f} | "
                    f"{r['errors']} |")
        # Gateway overhead: many short requests, direct vs gateway, same run.
        lines += ["", "Gateway overhead on the real engine (non-streaming, max_tokens 1, c=1, "
                  "100 requests each, two rounds):", ""]
        engine_key = st.engine_key(inst["id"])
        for path, url, key in [("direct", direct, engine_key), ("gateway", gateway, st.key),
                               ("direct", direct, engine_key), ("gateway", gateway, st.key)]:
            r = st.load(url, "llama-8b", 1, 20 if QUICK else 100, key=key, max_tokens=1, words=20,
                        tag=f"overhead-{path}", extra=["--no-stream"] + ENDPOINT_FLAGS)
            lines.append(f"- {path}: latency p50 {r['latency_ms']['p50']:.3f} ms, p99 "
                         f"{r['latency_ms']['p99']:.3f} ms")
        write(args, "serve.md", "\n".join(lines) + "\n")
    finally:
        st.stop()


def one_gpu_body(args, sequences):
    """A deployment of the test model for the phases that put two on one GPU: binpack keeps both
    on one GPU even when the machine has more; 4,096 tokens for each of `sequences`."""
    return {"backend": "llama.cpp", "placement_strategy": "binpack",
            "source": {"type": "local_path", "path": args.model_file},
            "context_length": 4096, "max_concurrent_sequences": sequences}


def share(args):
    st = Stack(args)
    st.start()
    try:
        body = one_gpu_body(args, sequences=8)
        a_model, a = deploy_checked(st, "llama-8b-a", body=body)
        b_model, b = deploy_checked(st, "llama-8b-b", body=body)
        for name in ["llama-8b-a", "llama-8b-b"]:
            r = st.load(st.api.base, name, 4, 8, key=st.key, max_tokens=64, tag=f"share-{name}",
                        extra=ENDPOINT_FLAGS)
            if r["errors"]:
                raise RuntimeError(f"{name}: {r['errors']} errors")
        time.sleep(3)  # a heartbeat after both engines allocated
        index = a["gpu_indexes"][0]
        gpu = [g for g in st.gpus() if g["index"] == index][0]
        apps = smi("compute-apps=gpu_uuid,pid,used_memory")
        mem = smi("gpu=memory.used,memory.reserved,memory.total")[index]
        # Enforced sharing (docs/gpu-sharing.md): each engine's environment and what llama.cpp
        # itself saw of the device's memory (its slice, when libsegma-vgpu is preloaded).
        slices = []
        for inst in (a, b):
            pid = st.engine_pids().get(inst["id"])
            env = dict(kv.split("=", 1) for kv in
                       open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv) if pid else {}
            log = open(os.path.join(st.data, "worker", "logs", f"instance-{inst['id']}.log")).read()
            seen = re.findall(r"using device CUDA\d+ \([^)]*\)[^\n]*?(\d+) MiB free", log)
            slices.append(
                f"- instance {inst['id']}: LD_PRELOAD {'libsegma-vgpu' if 'libsegma-vgpu' in env.get('LD_PRELOAD', '') else 'absent'}, "
                f"SEGMA_VGPU_LIMITS {env.get('SEGMA_VGPU_LIMITS', '-')}, CUDA_DEVICE_ORDER "
                f"{env.get('CUDA_DEVICE_ORDER', '-')}; llama.cpp saw {seen[0] if seen else '?'} MiB free")
        lines = [
            "Two deployments of the 8B model on one GPU through VRAM claims (4,096 tokens x 8 "
            "sequences each):", "",
            f"- llama-8b-a: GPU(s) {a['gpu_indexes']}, claim "
            f"{sum(a['claim']['vram'].values()) // MiB} MiB, RUNNING after {a['seconds_to_running']} s",
            f"- llama-8b-b: GPU(s) {b['gpu_indexes']}, claim "
            f"{sum(b['claim']['vram'].values()) // MiB} MiB, RUNNING after {b['seconds_to_running']} s",
            f"- both served 8 streamed requests each through the gateway with 0 errors",
            f"- worker report (/v2/gpus): memory_used {gpu['memory_used'] // MiB} MiB, "
            f"memory_allocated {gpu.get('memory_allocated', 0) // MiB} MiB, external "
            f"{gpu['memory_used_external'] // MiB} MiB, processes "
            f"{json.dumps([(p['pid'], p['memory_used'] // MiB, p['managed']) for p in gpu.get('processes', [])])}",
            f"- nvidia-smi: memory.used {mem[0]} MiB + reserved {mem[1]} MiB of {mem[2]} MiB; "
            f"compute apps (pid, MiB) {apps}",
        ] + slices
        lines += over_slice(st, a, body)
        write(args, "share.md", "\n".join(lines) + "\n")
    finally:
        st.stop()


def over_slice(st, a, body):
    """A third deployment on the same GPU whose engine is given (through backend_parameters) a
    context far beyond what its claim was sized for: under enforced sharing llama.cpp is refused
    the memory at its slice (issue 22). Reports how it ended, what the instance and /v2/gpus say,
    and that the two deployments already there kept serving."""
    over = dict(body, backend_parameters=["-c", "262144"], restart_on_error=False,
                gpu_selector={"gpu_ids": [f"{a['worker_name']}:{a['gpu_indexes'][0]}"]})
    model = st.api.ok("POST", "/v2/models", dict(over, name="llama-8b-over", project_id=st.project))
    t0 = time.time()

    def settled():
        inst = st.instance(model["id"])
        return inst if inst and inst["state"] in ("RUNNING", "ERROR") else None
    wait(settled, 600, "llama-8b-over RUNNING or ERROR")
    time.sleep(2)  # a heartbeat after the engine's last allocation
    inst = st.instance(model["id"])
    log = open(os.path.join(st.data, "worker", "logs", f"instance-{inst['id']}.log")).read()
    refused = re.findall(r"segma-vgpu: out of memory[^\n]*", log)
    seen = re.findall(r"using device CUDA\d+ \([^)]*\)[^\n]*?(\d+) MiB free", log)
    slices = [sl for g in st.gpus() for sl in g.get("slices", [])
              if sl["instance_id"] == inst["id"]]
    served = []
    for name in ["llama-8b-a", "llama-8b-b"]:
        r = st.load(st.api.base, name, 4, 8, key=st.key, max_tokens=64, tag=f"over-{name}",
                    extra=ENDPOINT_FLAGS)
        served.append(f"{name} {r['errors']} errors")
    claim = sum(inst["claim"]["vram"].values()) // MiB
    return [
        "", "A third 8B deployment on the same GPU, enforced, its claim sized for 4,096 x 8 "
        "tokens but its engine given `-c 262144` (backend_parameters), restart_on_error off:", "",
        f"- llama-8b-over: claim {claim} MiB; {inst['state']} after {time.time() - t0:.0f} s; "
        f"state_message: `{inst['state_message'][:400]}`",
        f"- llama.cpp saw {seen[0] if seen else '?'} MiB free; the library refused "
        f"{len(refused)} allocation(s){': `' + refused[0] + '`' if refused else ''}",
        f"- /v2/gpus slice: {json.dumps(slices)}",
        f"- afterwards, 8 streamed requests each through the gateway: {', '.join(served)}",
    ]


def compute(args):
    """Issue 22's compute share through segma's own deployment path: two deployments of the 8B
    model on one GPU claiming 70 % and 30 % of it (gpu_compute_percent), each loaded alone, then
    both at once. Reports the tokens/s each gets under contention against its claim, and what each
    engine was launched with (SEGMA_VGPU_COMPUTE)."""
    import threading
    st = Stack(args)
    st.start()
    try:
        body = one_gpu_body(args, sequences=16)
        shares = {"llama-8b-70": 70, "llama-8b-30": 30}
        insts = {}
        for name, pct in shares.items():
            _, insts[name] = deploy_checked(st, name, body=dict(body, gpu_compute_percent=pct))
        if len({tuple(i["gpu_indexes"]) for i in insts.values()}) != 1:
            raise RuntimeError(f"not on one GPU: {[i['gpu_indexes'] for i in insts.values()]}")
        users, n, tokens = (2, 4, 16) if QUICK else (8, 48, 256)

        def run(name, tag):
            return st.load(st.api.base, name, users, n, key=st.key, max_tokens=tokens, tag=tag,
                           extra=ENDPOINT_FLAGS)
        alone = {name: run(name, f"compute-alone-{name}") for name in shares}
        together = {}
        threads = [threading.Thread(target=lambda nm=name: together.__setitem__(
            nm, run(nm, f"compute-both-{nm}"))) for name in shares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = sum(r["output_tokens_per_s"] for r in together.values())
        lines = [
            f"Two deployments of the 8B model (q8_0) on GPU {insts['llama-8b-70']['gpu_indexes']}, "
            f"enforced, `gpu_compute_percent` 70 and 30; {users} streaming users each, "
            f"{n} requests of {tokens} tokens, through the gateway; alone, then both at once:", "",
            "| deployment | claim | alone: total tok/s | both: total tok/s | both: share of the "
            "two | both: tok/s per user p50 | both: TTFT p50 ms | errors |",
            "|---|---|---|---|---|---|---|---|"]
        for name, pct in shares.items():
            a, b = alone[name], together[name]
            lines.append(
                f"| {name} | {pct} % | {a['output_tokens_per_s']:.0f} | "
                f"{b['output_tokens_per_s']:.0f} | {100 * b['output_tokens_per_s'] / total:.0f} % | "
                f"{b['tokens_per_s_per_user']['p50']:.1f} | {b['ttft_ms']['p50']:.0f} | "
                f"{a['errors'] + b['errors']} |")
        lines.append("")
        for name, inst in insts.items():
            pid = st.engine_pids().get(inst["id"])
            env = dict(kv.split("=", 1) for kv in
                       open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv) if pid else {}
            lines.append(f"- {name} (instance {inst['id']}): SEGMA_VGPU_COMPUTE "
                         f"{env.get('SEGMA_VGPU_COMPUTE', '-')}, SEGMA_VGPU_LIMITS "
                         f"{env.get('SEGMA_VGPU_LIMITS', '-')}, LD_PRELOAD "
                         f"{'libsegma-vgpu' if 'libsegma-vgpu' in env.get('LD_PRELOAD', '') else 'absent'}")
        write(args, "compute.md", "\n".join(lines) + "\n")
    finally:
        st.stop()


def multi(args):
    st = Stack(args)
    st.start()
    try:
        gpus = st.gpus()
        if len(gpus) < 2:
            write(args, "multi.md", f"multi: {len(gpus)} GPU, nothing to do\n")
            return
        tp_model, tp = deploy_checked(st, "llama-8b-tp2", ctx=4096, parallel=8,
                                      gpus_per_replica=2)
        one_model, one = deploy_checked(st, "llama-8b-one", ctx=4096, parallel=8)
        results = []
        for name in ["llama-8b-tp2", "llama-8b-one"]:
            results.append(st.load(st.api.base, name, 8, 16, key=st.key, max_tokens=128,
                                   tag=f"multi-{name}", extra=ENDPOINT_FLAGS))
        topo = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True).stdout
        lines = [f"{len(gpus)} GPUs reported by the worker:", ""]
        for g in gpus:
            lines.append(f"- {g['id']}: {g['name']}, {g['memory_total'] // MiB} MiB, links "
                         f"{json.dumps(g.get('links', {}))}")
        lines += ["", "nvidia-smi topo -m:", "", "```", topo.rstrip(), "```", "",
                  f"- llama-8b-tp2 (gpus_per_replica 2): GPUs {tp['gpu_indexes']}, tensor split "
                  f"{tp['claim']['tensor_split']}, claim per GPU "
                  f"{ {k: v // MiB for k, v in tp['claim']['vram'].items()} } MiB; "
                  f"8 users: {results[0]['tokens_per_s_per_user']['p50']:.1f} tok/s per user, "
                  f"{results[0]['errors']} errors",
                  f"- llama-8b-one: GPU {one['gpu_indexes']}; 8 users: "
                  f"{results[1]['tokens_per_s_per_user']['p50']:.1f} tok/s per user, "
                  f"{results[1]['errors']} errors"]
        write(args, "multi.md", "\n".join(lines) + "\n")
    finally:
        st.stop()


# ---------------------------------------------------------------------------------------------
# tune: segma's engine choices against llama.cpp's defaults.

# Vendor datasheet memory bandwidth, bytes/s, by a substring of the NVML name.
PEAK_BANDWIDTH = [("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12),
                  ("RTX PRO 6000", 1.79e12), ("A100", 2.0e12), ("L40S", 0.864e12)]

# llama.cpp's own defaults for what segma chooses on a GPU (flash attention auto, -b 2048 -ub 512),
# restored through backend_parameters: llama.cpp takes the last value of a repeated flag.
LLAMA_DEFAULTS = ["-fa", "auto", "-b", "2048", "-ub", "512"]

# plan → (model label, [(variant, backend_parameters, max_concurrent_sequences,
#                        [(users, requests, paths)])]). llama.cpp's --parallel is
# max_concurrent_sequences: each deployment is sized for the users it serves. None leaves both
# max_concurrent_sequences and context_length unset: what a user who sets neither gets
# (the scheduler's default target, docs/scheduler.md "Concurrency").
G, D = ("gateway",), ("direct", "gateway")
PLANS = {
    "quick": ("tiny", [("segma", [], 4, [(1, 2, D), (4, 4, G)]),
                       ("llama.cpp defaults", LLAMA_DEFAULTS, 4, [(4, 4, G)])]),
    "8b-q8_0": ("Llama-3.1-8B layout, q8_0", [
        ("segma, 32 sequences", [], 32, [(1, 4, G), (8, 16, G), (16, 32, G), (32, 64, D)]),
        ("segma, concurrency unset", [], None, [(1, 4, G), (32, 64, G)]),
        ("segma, 64 sequences", [], 64, [(64, 128, G)])]),
    "8b-check": ("Llama-3.1-8B layout, q8_0 (the rows a launch change is checked on)", [
        ("segma, 32 sequences", [], 32, [(1, 4, G), (32, 64, G)])]),
    # The same deployment with and without libsegma-vgpu preloaded (gpu_sharing, docs/
    # gpu-sharing.md): a claim smaller than the GPU is a slice when sharing is enforced.
    "8b-vgpu": ("Llama-3.1-8B layout, q8_0, gpu_sharing claims against enforced", [
        ("segma, 32 sequences, gpu_sharing claims", [], 32, [(1, 4, G), (8, 16, G), (32, 64, G)]),
        ("segma, 32 sequences, gpu_sharing enforced", [], 32,
         [(1, 4, G), (8, 16, G), (32, 64, G)])]),
    "8b-kvu": ("Llama-3.1-8B layout, q8_0, one KV buffer for all slots (-kvu)", [
        ("segma + -kvu, 32 sequences", ["-kvu"], 32, [(32, 64, G)]),
        ("segma + -kvu, 64 sequences", ["-kvu"], 64, [(64, 128, G)])]),
    "8b-f16": ("Llama-3.1-8B layout, f16", [
        ("segma, 32 sequences", [], 32, [(1, 4, G), (32, 64, G)])]),
    "32b-q8_0": ("32B layout (Qwen2.5-32B dimensions), q8_0", [
        ("segma, 32 sequences", [], 32, [(1, 4, G), (16, 32, G), (32, 64, G)]),
        ("segma, concurrency unset", [], None, [(32, 64, G)])]),
}


def peak_bandwidth(gpu_name):
    for key, bw in PEAK_BANDWIDTH:
        if key in gpu_name:
            return bw
    return 0.0


def engine_facts(st, inst):
    """What llama.cpp itself reported for `inst`: its argv, the devices it used and the layers it
    offloaded. Raises unless every layer went to the GPU (issue 14's -ngl regression)."""
    pid = st.engine_pids().get(inst["id"])
    argv = open(f"/proc/{pid}/cmdline").read().split("\0")[:-1] if pid else []
    log = open(os.path.join(st.data, "worker", "logs", f"instance-{inst['id']}.log")).read()
    layers = re.search(r"offloaded (\d+)/(\d+) layers to GPU", log)
    devices = sorted(set(re.findall(r"using device (\S+) \(([^)]*)\)", log)))
    flash = re.search(r"flash_attn\s*=\s*(\S+)", log)
    ubatch = re.search(r"n_ubatch\s*=\s*(\d+)", log)
    facts = {"argv": argv, "devices": devices,
             "layers": f"{layers.group(1)}/{layers.group(2)}" if layers else "?",
             "flash_attn": flash.group(1) if flash else "?",
             "n_ubatch": ubatch.group(1) if ubatch else "?"}
    if not QUICK and (not layers or layers.group(1) != layers.group(2) or not devices):
        raise RuntimeError(f"instance {inst['id']}: not every layer on the GPU: {facts}")
    return facts


def deploy_checked(st, name, **kw):
    """st.deploy, then the engine's own log checked (engine_facts), kept in inst["engine"]."""
    model, inst = st.deploy(name, **kw)
    inst["engine"] = engine_facts(st, inst)
    return model, inst


def undeploy(st, model):
    st.api.ok("DELETE", f"/v2/models/{model['id']}")
    wait(lambda: not st.engine_pids(), 120, f"{model['name']}'s engine stopped")


def tune(args):
    label, variants = PLANS[args.plan]
    st = Stack(args)
    st.start()
    try:
        gpu = st.gpus()[0]
        peak = peak_bandwidth(gpu["name"])
        size = os.path.getsize(args.model_file)
        head = [f"### {label} ({size / 1e9:.1f} GB), {gpu['name']}", "",
                f"`gpu_bench.py tune --plan {args.plan}`. Streaming chat completions, 128 output "
                "tokens each (`ignore_eos`), distinct prompts of 200 words (~260 tokens), "
                "`segma bench load`. BW = tok/s per user (p50) × weight bytes ÷ the card's "
                f"datasheet bandwidth ({peak / 1e12:.2f} TB/s): the share of it that reading "
                "the weights once per decoding step takes.", ""]
        rows = ["| config | users | path | requests | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | "
                "tok/s per user p50 | tok/s per user min | total tok/s | BW | errors |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        engines = []
        for variant, params, sequences, loads in variants:
            body = {"backend": "llama.cpp",
                    "source": {"type": "local_path", "path": args.model_file},
                    "backend_parameters": params}
            if sequences is not None:
                body["context_length"] = 512 if QUICK else 2048
                body["max_concurrent_sequences"] = sequences
            sharing = re.search(r"gpu_sharing (\w+)", variant)
            if sharing:
                body["gpu_sharing"] = sharing.group(1)
            name = "tune-" + re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")
            model, inst = deploy_checked(st, name, body=body)
            facts = inst["engine"]
            engines.append(f"- {variant}: RUNNING after {inst['seconds_to_running']} s; llama.cpp "
                           f"reported {facts['layers']} layers on the GPU, devices "
                           f"{facts['devices']}, flash_attn {facts['flash_attn']}, n_ubatch "
                           f"{facts['n_ubatch']}; argv `{' '.join(facts['argv'][1:])}`")
            for users, n, paths in loads:
                for p in paths:
                    url = f"http://127.0.0.1:{inst['port']}" if p == "direct" else st.api.base
                    r = st.load(url, name, users, n,
                                key=st.engine_key(inst["id"]) if p == "direct" else st.key,
                                tag=f"tune-{args.plan}-{name}-{p}-c{users}",
                                max_tokens=16 if QUICK else 128, extra=ENDPOINT_FLAGS)
                    tps = r["tokens_per_s_per_user"]
                    bw = f"{tps['p50'] * size / peak:.0%}" if peak else "-"
                    rows.append(
                        f"| {variant} | {users} | {p} | {r['ok']} | {r['ttft_ms']['p50']:.0f} | "
                        f"{r['ttft_ms']['p95']:.0f} | {r['itl_ms']['p50']:.2f} | "
                        f"{tps['p50']:.1f} | {tps['min']:.1f} | {r['output_tokens_per_s']:.0f} | "
                        f"{bw} | {r['errors']} |")
                    write(args, f"tune-{args.plan}.md", "\n".join(head + rows + [""] + engines))
            # The engine's own lines about memory and retries: libsegma-vgpu's refusals and
            # llama.cpp's answers to them.
            log = open(os.path.join(st.data, "worker", "logs", f"instance-{inst['id']}.log")).read()
            with open(os.path.join(args.out, f"{name}.engine.log"), "w") as f:
                f.write("\n".join(l for l in log.splitlines()
                                  if re.search(r"segma-vgpu|MiB free|out of memory|retrying|"
                                               r"failed|pool|KV self|n_ctx|compute buffer", l)))
            undeploy(st, model)
        write(args, f"tune-{args.plan}.md", "\n".join(head + rows + [""] + engines) + "\n")
    finally:
        st.stop()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "compare-inventory":
        return compare_inventory(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["serve", "share", "multi", "tune", "compute"])
    p.add_argument("--plan", choices=sorted(PLANS), default="quick")
    p.add_argument("--segma", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--engine-dir", required=True)
    p.add_argument("--model-file", required=True)
    args = p.parse_args()
    {"serve": serve, "share": share, "multi": multi, "tune": tune,
     "compute": compute}[args.phase](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
