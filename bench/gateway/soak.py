#!/usr/bin/env python3
"""Gateway soak: `segma start` (Release, pinned to core 1) with a `segma engine-sim --speed 0`
deployment; `segma bench load` runs c=16 for 30 s at a time through the gateway, alternating whole
answers and streams, for SECONDS; the server's RSS and its usage records (queued/written/dropped)
are sampled after every round.

    python3 bench/gateway/soak.py --segma build/release/src/cli/segma --seconds 600
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "common"))
from segma_stack import Stack, rss_kib  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--segma", required=True)
    p.add_argument("--seconds", type=int, default=600)
    args = p.parse_args()
    args.work = tempfile.mkdtemp(prefix="segma-soak.")
    args.out = args.work
    args.prefix = ["taskset", "-c", "1"]
    st = Stack(args)
    st.start()
    try:
        sim = {"backend": "simulator", "source": {"type": "simulated", "params_b": 8},
               "backend_parameters": ["--speed", "0", "--threads", "1"]}
        st.deploy("sim", body=sim, timeout=120)
        for pid in st.engine_pids().values():
            subprocess.run(["taskset", "-a", "-pc", "0", str(pid)], stdout=subprocess.DEVNULL)
        # usage: the gateway's usage records after each round, queued/written/dropped.
        print("t_s rss_kib mode req_s errors usage", flush=True)
        print(0, rss_kib(st.proc.pid), "-", 0, 0, "-", flush=True)
        t0, i = time.time(), 0
        while time.time() - t0 < args.seconds:
            stream = i % 2 == 1
            i += 1
            cmd = ["nice", "-n", "5", args.segma, "bench", "load", "--url", st.api.base, "--key",
                   st.key, "--model", "sim", "-c", "16", "--duration", "30", "--json", "-"]
            if not stream:
                cmd.append("--no-stream")
            out = subprocess.run(cmd, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            u = st.usage_records()
            print(round(time.time() - t0), rss_kib(st.proc.pid), "stream" if stream else "whole",
                  round(r["requests_per_s"]), r["errors"],
                  f"{u['queued']}/{u['written']}/{u['dropped']}", flush=True)
    finally:
        st.stop()


if __name__ == "__main__":
    main()
