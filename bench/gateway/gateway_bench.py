#!/usr/bin/env python3
"""Gateway benchmark (issue 5; results in docs/benchmarks.md "Gateway"). python3 stdlib only.

  bench/gateway/run.sh [--quick] [--soak SECONDS]

In one run on one machine, against one `segma engine-sim --speed 0` (answers at once) deployed
through segma's REST API: direct to the engine; nginx (Debian, 1 worker, proxy_buffering off);
segma's gateway with auth, limits and metering on, with its defaults (usage journal on, ADR 0024),
with `--no-usage-journal`, with `--engine-metrics-interval 0` (no scrapes of the engines' own
/metrics; the default stack scrapes every 10 s, `--scrape-interval` sets it) and with
`--busy-poll-us 100` (each a further `segma start` with its own engine-sim; ADR 0018); Portkey
(@portkey-ai/gateway@1.15.2, a routing proxy with no keys or budgets). `--skip
portkey,busy-poll,no-journal,no-scrape` leaves peers out (a shorter run). Reports ratios, so the shared, noisy machine matters less.

Cores (defaults for this 2-core machine; --load-core, --proxy-core, --engine-cores): the load
generator (`segma bench load`) on core 0, each proxy on core 1 (segma's process also holds its
idle control plane and worker). The c=1 rounds run in two layouts:
- engines on core 0, with the load generator. A direct request then never leaves core 0, while
  a proxied one crosses between the cores four times, each crossing waking a halted vCPU.
- engines on core 1, with the proxy. Direct and proxied requests then cross the same two times,
  and the difference is the proxy's own work.
Throughput at c=16 and the 512 streams use the first layout.

The concurrency-1 latencies are measured in rounds that alternate between the peers (a short
block of each per round, the order rotated every round) and pooled per peer: the host's noise
drifts over minutes, and a peer measured in one long block could get a quiet or a loud spell to
itself. Throughput at c=16 is one 10 s block per peer.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from segma_stack import Stack, rss_kib, run_load, wait  # noqa: E402

NGINX_PORT = 18081
PORTKEY_PORT = 18787
# The further `segma start`s, each the default stack with one thing changed:
# (--skip tag, peer name, segma start flags, port, what the summary calls it).
VARIANTS = [
    ("busy-poll", "segma --busy-poll-us 100", ["--busy-poll-us", "100"], 18083,
     "with busy polling"),
    ("no-journal", "segma --no-usage-journal", ["--no-usage-journal"], 18084,
     "without the usage journal"),
    ("no-scrape", "segma --engine-metrics-interval 0", ["--engine-metrics-interval", "0"], 18085,
     "without engine scrapes"),
]
# Requests and streams per peer in each c=1 round, by (quick run, Portkey).
BLOCK = {(False, False): (2000, 500), (False, True): (200, 100),
         (True, False): (500, 250), (True, True): (100, 50)}
# Cores (taskset), set from the command line in main().
CORE_LOAD = ["taskset", "-c", "0"]
CORE_PROXY = ["taskset", "-c", "1"]

NGINX_CONF = """worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy; fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi; scgi_temp_path {work}/nginx-scgi;
  upstream up {{ server 127.0.0.1:{engine}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up;
    proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off;
    proxy_set_header Authorization "Bearer {engine_key}"; }} }} }}
"""

# Portkey on Node 20 fails every stream with "TypeError: immutable" unless fetch responses are
# re-wrapped (reference/gateway.md §6.2, Portkey-AI/gateway #1389).
MUTABLE_FETCH = """const f = globalThis.fetch;
globalThis.fetch = async (...a) => { const r = await f(...a);
  return new Response(r.body, {status: r.status, statusText: r.statusText,
                               headers: new Headers(r.headers)}); };
"""


def rss_by_mapping(pid, top=4):
    """The `top` largest contributors to RSS, KiB by mapped file (anonymous memory as "[anon]")."""
    totals, name = {}, "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                name = os.path.basename(fields[5]) if len(fields) > 5 else "[anon]"
            elif fields[0] == "Rss:":
                totals[name] = totals.get(name, 0) + int(fields[1])
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def start_nginx(work, engine_port, engine_key):
    """nginx in front of the engine, sending it the engine's secret as segma's gateway does."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    os.makedirs(os.path.join(work, "nginx-body"), exist_ok=True)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(work=work, engine=engine_port, port=NGINX_PORT,
                                  engine_key=engine_key))
    proc = subprocess.Popen(CORE_PROXY + [nginx, "-c", conf, "-e", os.path.join(work, "nginx.err")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


def start_portkey(work, portkey_dir):
    preload = os.path.join(work, "mutable-fetch.mjs")
    with open(preload, "w") as f:
        f.write(MUTABLE_FETCH)
    entry = os.path.join(portkey_dir, "node_modules/@portkey-ai/gateway/build/start-server.js")
    env = dict(os.environ, NODE_ENV="production")
    return subprocess.Popen(
        CORE_PROXY + ["node", "--import", preload, entry, f"--port={PORTKEY_PORT}", "--headless"],
        env=env, stdout=open(os.path.join(work, "portkey.log"), "w"), stderr=subprocess.STDOUT)


def http_ok(url):
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except Exception as e:  # any HTTP answer means it listens
        return hasattr(e, "code")


def fmt_ms(v):
    return f"{v:.3f}"


def added_us(name, v_ms, direct_ms):
    """What `name` adds to the direct path, in µs ("-" for direct itself)."""
    return "-" if name == "direct" else f"{(v_ms - direct_ms) * 1000:.0f}"


def percentiles(values_s):
    """p50 and p99 in ms by nearest rank, as `segma bench load` computes them."""
    v = sorted(values_s)
    if not v:
        return {"p50": 0.0, "p99": 0.0}
    def rank(q):
        return v[min(max(math.ceil(q * len(v)), 1), len(v)) - 1] * 1000
    return {"p50": rank(0.50), "p99": rank(0.99), "count": len(v)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--segma", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--portkey-dir", required=True)
    p.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    p.add_argument("--soak", type=int, default=0, help="seconds of c=16 load with RSS samples")
    p.add_argument("--load-core", default="0", help="core of the load generator")
    p.add_argument("--proxy-core", default="1", help="core of each proxy (one at a time is busy)")
    p.add_argument("--skip", default="",
                   help="peers to leave out, comma-separated: portkey, "
                        + ", ".join(tag for tag, *_ in VARIANTS))
    p.add_argument("--scrape-interval", default="10",
                   help="seconds between the default stack's scrapes of its engines' /metrics")
    p.add_argument("--engine-cores", default="0,1",
                   help="cores the engines are moved to for the c=1 rounds, one layout each; "
                        "c=16 and the 512 streams use the first")
    args = p.parse_args()
    global CORE_LOAD, CORE_PROXY
    CORE_LOAD = ["taskset", "-c", args.load_core]
    CORE_PROXY = ["taskset", "-c", args.proxy_core]
    engine_cores = args.engine_cores.split(",")
    args.prefix = CORE_PROXY
    q = args.quick
    scrape = ["--engine-metrics-interval", args.scrape_interval]
    args.extra = scrape
    st = Stack(args)
    skip = set(filter(None, args.skip.split(",")))
    variants = {}  # peer name → its stack
    for tag, name, flags, port, _ in VARIANTS:
        if tag in skip:
            continue
        v_args = argparse.Namespace(**vars(args))
        v_args.work = os.path.join(args.work, tag)
        v_args.extra = (scrape if "--engine-metrics-interval" not in flags else []) + flags
        variants[name] = Stack(v_args, port=port)
    extra_stacks = list(variants.values())
    st.start()
    procs = []
    try:
        idle_rss = rss_kib(st.proc.pid)
        idle_maps = rss_by_mapping(st.proc.pid)
        for stack in extra_stacks:
            stack.start()
        # Limits on, for real: every request is checked and charged against the key's and the
        # project's windows (set high enough never to refuse).
        high = {"requests_per_minute": 100_000_000, "tokens_per_minute": 10_000_000_000,
                "max_concurrent": 100_000, "tokens_per_day": 10**12, "tokens_per_month": 10**13}
        sim = {"backend": "simulator", "source": {"type": "simulated", "params_b": 8},
               "backend_parameters": ["--speed", "0", "--threads", "1"]}
        for stack in [st] + extra_stacks:
            stack.api.ok("PATCH", f"/v2/api-keys/{stack.key_id}", {"limits": high})
            stack.api.ok("PATCH", f"/v2/projects/{stack.project}", {"limits": high})
        _, inst = st.deploy("sim", body=sim, timeout=120)
        # Its own engine-sim, started the same way: a segma process drives only engines it runs.
        for stack in extra_stacks:
            stack.deploy("sim", body=sim, timeout=120)
        paced = {"backend": "simulator", "source": {"type": "simulated", "params_b": 8},
                 "max_concurrent_sequences": 1024, "context_length": 512,
                 "backend_parameters": ["--ttft-ms", "20", "--decode-ms-per-token", "10",
                                        "--load-slowdown", "0", "--threads", "1"]}
        _, paced_inst = st.deploy("sim-paced", body=paced, timeout=120)
        # The engines inherited segma's core; each layout moves them to its own.
        engine_pids = [pid for stack in [st] + extra_stacks for pid in stack.engine_pids().values()]

        def move_engines(core):
            for pid in engine_pids:
                subprocess.run(["taskset", "-a", "-pc", core, str(pid)], stdout=subprocess.DEVNULL)
        engine = f"http://127.0.0.1:{inst['port']}"
        # The engine's own secret (docs/adr/0035-engine-secrets.md): what every peer that talks to
        # the engine directly must send, as segma's gateway does.
        engine_key = st.engine_key(inst["id"])
        procs.append(start_nginx(args.work, inst["port"], engine_key))
        if "portkey" not in skip:
            procs.append(start_portkey(args.work, args.portkey_dir))
        wait(lambda: http_ok(f"http://127.0.0.1:{NGINX_PORT}/health"), 30, "nginx")
        if "portkey" not in skip:
            wait(lambda: http_ok(f"http://127.0.0.1:{PORTKEY_PORT}/"), 60, "portkey")
        portkey_headers = ["-H", "x-portkey-provider: openai",
                           "-H", f"x-portkey-custom-host: {engine}/v1",
                           "-H", f"Authorization: Bearer {engine_key}"]
        # A skipped stack was never started (it has no key): its peer is not even built.
        peers = [
            ("direct", lambda: (engine, engine_key, [])),
            ("nginx", lambda: (f"http://127.0.0.1:{NGINX_PORT}", None, [])),
            ("segma", lambda: (st.api.base, st.key, [])),
        ] + [(name, lambda v=v: (v.api.base, v.key, [])) for name, v in variants.items()] + [
            ("portkey", lambda: (f"http://127.0.0.1:{PORTKEY_PORT}", None, portkey_headers)),
        ]
        peers = [(name, *make()) for name, make in peers
                 if not (name == "portkey" and "portkey" in skip)]

        def load(name, url, key, extra, c, n, **kw):
            return run_load(args, url, "sim", c, n, key=key, tag=name, prefix=CORE_LOAD,
                            extra=extra + kw.pop("more", []), **kw)

        # c=1: ROUNDS rounds; in each, for each layout, one block of every peer (non-streamed,
        # then streamed).
        rounds = 2 if q else 10
        pooled = {(core, name): {"latency_s": [], "ttft_s": []}
                  for core in engine_cores for name, *_ in peers}
        errors_by_peer = {name: 0 for name, *_ in peers}
        samples = os.path.join(args.work, "samples.json")
        for r, core in ((r, core) for r in range(rounds) for core in engine_cores):
            move_engines(core)
            for name, url, key, extra in peers[r % len(peers):] + peers[:r % len(peers)]:
                slow = name == "portkey"
                n_lat, n_ttft = BLOCK[(q, slow)]
                for stream, n in ((False, n_lat), (True, n_ttft)):
                    block = load(name, url, key, extra + ([] if stream else ["--no-stream"]), 1,
                                 n, max_tokens=16, words=32, warmup=20 if slow else 100,
                                 more=["--samples", samples])
                    errors_by_peer[name] += block["errors"]
                    with open(samples) as f:
                        got = json.load(f)
                    pooled[(core, name)]["ttft_s" if stream else "latency_s"] += \
                        got["ttft_s" if stream else "latency_s"]
        move_engines(engine_cores[0])
        rows = {}
        for name, url, key, extra in peers:
            thr = load(name, url, key, extra + ["--no-stream"], 16, 0, max_tokens=16, words=32,
                       warmup=32, more=["--duration", "2" if q else "10"])
            rows[name] = (percentiles(pooled[(engine_cores[0], name)]["latency_s"]), thr,
                          percentiles(pooled[(engine_cores[0], name)]["ttft_s"]))
            if name == "segma":
                after_c16 = st.usage_records()
        busy_rss = rss_kib(st.proc.pid)

        streams = {}
        for name, url, key in [("direct", f"http://127.0.0.1:{paced_inst['port']}",
                                st.engine_key(paced_inst["id"])),
                               ("segma", st.api.base, st.key)]:
            streams[name] = run_load(args, url, "sim-paced", 512, 1024 if q else 2048, key=key,
                                     max_tokens=64, words=32, tag=f"streams-{name}",
                                     prefix=CORE_LOAD, warmup=0, extra=["--stall", "1"])

        soak = []
        if args.soak:
            t_end = time.time() + args.soak
            while time.time() < t_end:
                r = load("segma", st.api.base, st.key, ["--no-stream"], 16, 0, max_tokens=16,
                         words=32, warmup=0, more=["--duration", "30"])
                soak.append((round(time.time() - (t_end - args.soak)), rss_kib(st.proc.pid),
                             r["requests_per_s"], r["errors"]))

        d_lat, d_thr, d_ttft = rows["direct"]
        lines = [
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
            f"(`{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}`), "
            f"load average before the run {os.getloadavg()[0]:.1f}. Engine: `segma engine-sim "
            f"--speed 0` on core {engine_cores[0]}; load generator on core {args.load_core}; "
            f"each proxy on core {args.proxy_core}. "
            f"segma scrapes its engines' /metrics every {args.scrape_interval} s (0: never). "
            f"c=1 columns: {rounds} rounds alternating between the peers, pooled "
            f"({rows['direct'][0]['count']} requests and {rows['direct'][2]['count']} streams per "
            + (f"peer, Portkey {rows['portkey'][0]['count']} and {rows['portkey'][2]['count']})."
               if "portkey" in rows else "peer)."),
            "",
            "| path | c=1 p50 ms | c=1 p99 ms | added p50 µs | added p99 µs | c=16 req/s | "
            "vs nginx | stream TTFT p50 ms | TTFT p99 ms | added TTFT p99 µs | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
        n_thr = rows["nginx"][1]["requests_per_s"]
        for name, (lat, thr, ttft) in rows.items():
            errors = errors_by_peer[name] + thr["errors"]
            lines.append(
                f"| {name} | {fmt_ms(lat['p50'])} | {fmt_ms(lat['p99'])} "
                f"| {added_us(name, lat['p50'], d_lat['p50'])} "
                f"| {added_us(name, lat['p99'], d_lat['p99'])} "
                f"| {thr['requests_per_s']:.0f} | {thr['requests_per_s'] / n_thr:.2f} "
                f"| {fmt_ms(ttft['p50'])} | {fmt_ms(ttft['p99'])} "
                f"| {added_us(name, ttft['p99'], d_ttft['p99'])} | {errors} |")
        # The other layouts: c=1 only.
        for core in engine_cores[1:]:
            d = {k: percentiles(pooled[(core, "direct")][k]) for k in ("latency_s", "ttft_s")}
            lines += ["", f"c=1 with the engines on core {core} (same rounds, interleaved):", "",
                      "| path | c=1 p50 ms | c=1 p99 ms | added p50 µs | added p99 µs | "
                      "TTFT p99 ms | added TTFT p99 µs |", "|---|---|---|---|---|---|---|"]
            for name, *_ in peers:
                lat = percentiles(pooled[(core, name)]["latency_s"])
                ttft = percentiles(pooled[(core, name)]["ttft_s"])
                lines.append(
                    f"| {name} | {fmt_ms(lat['p50'])} | {fmt_ms(lat['p99'])} "
                    f"| {added_us(name, lat['p50'], d['latency_s']['p50'])} "
                    f"| {added_us(name, lat['p99'], d['latency_s']['p99'])} "
                    f"| {fmt_ms(ttft['p99'])} | {added_us(name, ttft['p99'], d['ttft_s']['p99'])} |")
        s_thr = rows["segma"][1]["requests_per_s"]
        # Only the peers that ran (--skip leaves the others out of the sentence too).
        ratios = [f"{label} {rows[name][1]['requests_per_s'] / n_thr:.2f}"
                  for _, name, _, _, label in VARIANTS if name in rows]
        summary = f"Throughput at c=16, segma/nginx: {s_thr / n_thr:.2f}"
        if ratios:
            summary += f" ({', '.join(ratios)})"
        if "portkey" not in skip:
            p_thr = rows.get("portkey", (0, {"requests_per_s": 0}))[1]["requests_per_s"]
            summary += "; segma/Portkey: " + (f"{s_thr / p_thr:.1f}x" if p_thr > 0
                                              else "Portkey answered nothing")
        lines += ["", summary + ".", "",
                  "512 concurrent streams (engine-sim 20 ms TTFT, 10 ms/token, 64 tokens each):",
                  ""]
        for name, r in streams.items():
            lines.append(
                f"- {name}: {r['ok']}/{r['requests']} ok, {r['missing_done']} without [DONE], "
                f"{r['token_event_mismatch']} with lost chunks (token events ≠ usage), "
                f"{r['stalls']} gaps > 1 s, max gap {r['max_gap_ms']:.0f} ms, TTFT p99 "
                f"{r['ttft_ms']['p99']:.1f} ms, ITL p99 {r['itl_ms']['p99']:.1f} ms")
        time.sleep(2)
        usage = st.usage_records()
        lines += ["", f"segma's usage records (its /metrics): {after_c16['queued']} queued at the "
                  f"end of its c=16 block; after the runs {usage['written']} written, "
                  f"{usage['dropped']} dropped, {usage['queued']} queued."]
        lines += ["", f"segma process RSS (server + gateway + worker, SQLite): idle "
                  f"{idle_rss / 1024:.1f} MiB after start, {busy_rss / 1024:.1f} MiB after the "
                  f"runs above. Largest parts at idle: "
                  + ", ".join(f"{n} {kib / 1024:.1f} MiB" for n, kib in idle_maps) + "."]
        if soak:
            lines += ["", "Soak (c=16 through segma, RSS sampled every 30 s): " + ", ".join(
                f"{t}s {rss / 1024:.1f} MiB {rps:.0f} req/s" for t, rss, rps, _ in soak),
                f"errors {sum(e for *_, e in soak)}; RSS growth first→last sample "
                f"{(soak[-1][1] - soak[0][1]) / 1024:+.1f} MiB."]
        text = "\n".join(lines) + "\n"
        with open(os.path.join(args.out, "gateway.md"), "w") as f:
            f.write(text)
        print(text)
    finally:
        for proc in procs:
            proc.terminate()
        st.stop()
        for stack in extra_stacks:
            stack.stop()


if __name__ == "__main__":
    main()
