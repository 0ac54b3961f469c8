#!/usr/bin/env python3
"""Prefix affinity against round robin on the simulator (issue 5; docs/benchmarks.md).

  python3 bench/gateway/prefix_bench.py --segma build/release/src/cli/segma [--quick]

For each policy (`segma start --gateway-routing affinity|round-robin`), a fresh stack deploys one
simulated 8B model on H100 timing (prefill ~0.16 ms/token, prefix cache of block hashes, 16k
tokens of KV per replica) with 4 replicas, then streams requests whose prompts start with one of 32
shared system prompts (~800 tokens) followed by a distinct question, at 16 concurrent users. It reports the engines' prefix
cache hit rate (vllm:prefix_cache_hits_total / queries_total summed over the replicas) and the
client's TTFT.
"""

import argparse
import os
import re
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from segma_stack import Stack  # noqa: E402


def counter(text, name):
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M):
        total += float(m.group(1))
    return total


def run(args, policy):
    args.extra = ["--gateway-routing", policy, "--fake-gpus", "4xH100:80"]
    st = Stack(args)
    st.start()
    try:
        # A prefix cache of 1,024 blocks x 16 tokens per replica: room for a quarter of the 32
        # shared prompts (~800 tokens each) plus the running sequences, not for all of them.
        body = {"backend": "simulator", "source": {"type": "simulated", "params_b": 8},
                "replicas": 4, "max_concurrent_sequences": 64, "context_length": 4096,
                "backend_parameters": ["--kv-blocks", "1024", "--block-size", "16"]}
        model, _ = st.deploy("sim-8b", body=body, timeout=120)
        from segma_stack import wait
        wait(lambda: sum(i["state"] == "RUNNING" for i in st.instances(model["id"])) == 4, 120,
             "4 replicas RUNNING")
        engines = [(i["port"], st.engine_key(i["id"])) for i in st.instances(model["id"])]
        r = st.load(st.api.base, "sim-8b", 16, 256 if args.quick else 1024, key=st.key,
                    max_tokens=32, words=20, tag=f"prefix-{policy}", warmup=0,
                    extra=["--prefix-groups", "32", "--prefix-words", "600"])
        hits = queries = 0.0
        for port, key in engines:
            # engine-sim guards /metrics with its secret (docs/adr/0035-engine-secrets.md).
            req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": f"Bearer {key}"})
            text = urllib.request.urlopen(req).read().decode()
            hits += counter(text, "vllm:prefix_cache_hits_total")
            queries += counter(text, "vllm:prefix_cache_queries_total")
        return r, hits / queries if queries else 0.0
    finally:
        st.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--segma", required=True)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    args.work = tempfile.mkdtemp(prefix="segma-prefix-bench.")
    args.out = args.work
    lines = ["| routing | prefix-cache hit rate | TTFT p50 ms | TTFT p95 ms | TTFT p99 ms | "
             "req/s | errors |", "|---|---|---|---|---|---|---|"]
    for policy in ["round-robin", "affinity"]:
        r, hit = run(args, policy)
        lines.append(f"| {policy} | {hit:.1%} | {r['ttft_ms']['p50']:.1f} | "
                     f"{r['ttft_ms']['p95']:.1f} | {r['ttft_ms']['p99']:.1f} | "
                     f"{r['requests_per_s']:.1f} | {r['errors']} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
