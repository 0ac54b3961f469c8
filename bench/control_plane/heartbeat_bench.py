"""Heartbeats at scale (issue 17; docs/benchmarks.md "Control plane: heartbeats at scale").

Against a Release `segma start --no-demo` in a scratch data dir, for each N in --workers:
registers N simulated workers (HTTP only: no process per worker), each reporting an 8 x H200
status, and brings them READY with one heartbeat each. Then three windows:
  heartbeats --seconds of heartbeats at the rate "N workers every --interval seconds" (worker i
             beats at start + (i / N + b) * interval; when the server cannot keep up the senders
             go as fast as it answers, and the achieved rate is reported);
  with_api   the same, while a separate process measures GET /v2/projects and GET /v2/gpus (the
             first page, as the console asks) back to back with a 100 ms pause;
  idle       --idle-seconds without heartbeats: what the timers (liveness, the controllers'
             sweep) cost on their own.
(The idle window comes last, so that no worker goes 60 s without a heartbeat because of the
benchmark.) Each heartbeat has new readings (utilisation, memory in use, temperature, power), the same
inventory. Reported per N (one JSON line, also appended to OUT/heartbeats.jsonl):
  server_cpu_ms_per_heartbeat  the server process's user+system CPU (/proc/PID/stat) over the
                               window, divided by the heartbeats answered in it (the timers'
                               work included: they run whatever the load)
  server_cores                 that CPU divided by the window (1.0 = one core busy)
  heartbeats_per_s             achieved, against target_per_s
  heartbeat_ms p50/p99         as the senders saw them
  api_ms p50/p99               per path (with_api)
Python 3 stdlib only.

  python3 bench/control_plane/heartbeat_bench.py --segma build/release/src/cli/segma \
      --workers 100,1000,10000 [--interval 10] [--seconds 60] [--senders 4] [--out DIR]
"""

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "common"))
from segma_stack import PASSWORD, Api, wait  # noqa: E402

GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU of process `pid` (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)


def gpu_status(worker, beat):
    """An 8 x H200 node's status; utilisation, memory, temperature and power move every beat."""
    rnd = random.Random(worker * 1000003 + beat)
    gpus = []
    for g in range(8):
        gpus.append({
            "index": g, "uuid": f"GPU-{worker:08x}-0000-4000-8000-{g:012x}",
            "name": "NVIDIA H200", "vendor": "nvidia", "compute_capability": "9.0",
            "memory_total": 141 * GiB, "memory_used": rnd.randint(1, 120) * GiB,
            "utilization": rnd.randint(0, 100), "temperature": rnd.randint(30, 80),
            "power": rnd.randint(100, 700), "power_limit": 700, "sm_clock": 1980,
            "memory_clock": 2619,
            "links": {str(p): "nvlink" for p in range(8) if p != g}})
    return {"status": {
        "cpu_count": 192, "cpu_utilization": rnd.randint(0, 100), "memory_total": 2048 * GiB,
        "memory_used": rnd.randint(100, 1000) * GiB, "disk_total": 30000 * GiB,
        "disk_used": 5000 * GiB, "arch": "x86_64", "os": "linux", "gpu_source": "nvml",
        "driver_version": "570.86.15", "gpus": gpus}}


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method, path, token, body=None):
        return self.call_raw(token, None if body is None else json.dumps(body).encode(), method,
                             path)

    def call_raw(self, token, data, method="POST", path="/v2/worker-heartbeat"):
        headers = {"Authorization": "Bearer " + token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.c.request(method, path, body=data, headers=headers)
                res = self.c.getresponse()
                text = res.read()
                return res.status, text
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 1:
                    raise
        return 0, b""


def parallel(n_threads, items, fn):
    """Runs fn(conn_index, item) over `items` on n_threads threads; re-raises the first error."""
    errors = []

    def run(k):
        try:
            for item in items[k::n_threads]:
                fn(k, item)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def probe_api(port, token, stop_at, out_q):
    """GET /v2/projects and /v2/gpus back to back until `stop_at`; latencies (ms) per path."""
    conn = Conn(port)
    lat = {"/v2/projects": [], "/v2/gpus": []}
    while time.time() < stop_at:
        for path in lat:
            t0 = time.perf_counter()
            status, _ = conn.call("GET", path, token)
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status}")
            lat[path].append((time.perf_counter() - t0) * 1000)
        time.sleep(0.1)
    out_q.put(lat)


def controller_passes(server):
    """{"n", "seconds"}: the controller passes so far and their total time (/metrics)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        for key, name in (("n", "segma_controller_pass_duration_seconds_count"),
                          ("seconds", "segma_controller_pass_duration_seconds_sum")):
            if line.startswith(name):
                out[key] = round(float(line.rsplit(" ", 1)[1]), 2)
    return out


def log_count(server, needle):
    with open(os.path.join(server.args.out, f"segma-{server.n}.log")) as f:
        return sum(needle in line for line in f)


class Server:
    def __init__(self, args, port, n):
        self.args, self.port, self.n = args, port, n
        self.data = tempfile.mkdtemp(prefix="segma-hb-bench.")
        self.proc = None

    def start(self):
        env = dict(os.environ, SEGMA_BOOTSTRAP_PASSWORD=PASSWORD)
        log = open(os.path.join(self.args.out, f"segma-{self.n}.log"), "w")
        cmd = [self.args.segma, "--log-level", "warn", "start", "--no-demo", "--data-dir", self.data, "--address",
               "127.0.0.1", "--port", str(self.port), "--heartbeat-interval",
               str(self.args.interval)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.api = Api(f"http://127.0.0.1:{self.port}")
        wait(lambda: self.api.call("GET", "/healthz")[0] == 200, 60, "segma /healthz")
        self.api.token = self.api.ok("POST", "/v2/auth/login",
                                     {"username": "admin", "password": PASSWORD})["token"]

    def stop(self):
        if self.proc:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.data, ignore_errors=True)


def run_one(args, n, port):
    server = Server(args, port, n)
    server.start()
    try:
        return measure(args, n, server)
    finally:
        server.stop()


def measure(args, n, server):
    api = server.api
    reg_token = api.ok("GET", "/v2/clusters")["items"][0]["registration_token"]
    conns = [Conn(server.port) for _ in range(args.senders)]
    tokens = [None] * n

    def register(k, i):
        status, text = conns[k].call("POST", "/v2/workers", reg_token, {
            "name": f"sim-{i:05d}", "address": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            "port": 10150, "labels": {"rack": f"r{i % 40}"}})
        if status != 201:
            raise RuntimeError(f"register sim-{i}: {status} {text[:200]}")
        tokens[i] = json.loads(text)["token"]

    beats_per_worker = int(args.seconds / args.interval) + 1

    def heartbeat(k, i, beat):
        status, text = conns[k].call("POST", "/v2/worker-heartbeat", tokens[i],
                                     gpu_status(i, beat))
        if status != 200:
            raise RuntimeError(f"heartbeat sim-{i}: {status} {text[:200]}")

    t0 = time.time()
    parallel(args.senders, list(range(n)), register)
    t_reg = time.time() - t0
    t0 = time.time()
    parallel(args.senders, list(range(n)), lambda k, i: heartbeat(k, i, 0))
    t_first = time.time() - t0
    # Let the controller passes and route rebuilds the registrations queued drain.
    time.sleep(3)
    first_demotions = log_count(server, "is NOT_READY")
    pid = server.proc.pid


    def window(first_beat, probe):
        """Heartbeats for args.seconds: worker i beats at start + (i / n + b) * interval."""
        deadline = time.time() + args.seconds
        q = multiprocessing.Queue()
        if probe:
            prober = multiprocessing.Process(target=probe_api,
                                             args=(server.port, api.token, deadline, q))
            prober.start()
        lat = []
        lat_mu = threading.Lock()
        cpu0, start = cpu_seconds(pid), time.time()

        def send(k):
            mine = []
            for b in range(beats_per_worker):
                for i in range(k, n, args.senders):
                    due = start + (i / n + b) * args.interval
                    if due > time.time():
                        time.sleep(max(0, min(due, deadline) - time.time()))
                    if time.time() >= deadline:
                        break
                    data = json.dumps(gpu_status(i, first_beat + b)).encode()
                    t = time.perf_counter()
                    status, _ = conns[k].call_raw(tokens[i], data)
                    if status != 200:
                        raise RuntimeError(f"heartbeat sim-{i}: {status}")
                    mine.append((time.perf_counter() - t) * 1000)
            with lat_mu:
                lat.extend(mine)

        errors = []

        def send_safe(k):
            try:
                send(k)
            except Exception as e:  # noqa: BLE001 (raised below)
                errors.append(e)
        threads = [threading.Thread(target=send_safe, args=(k,)) for k in range(args.senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - start
        cpu = cpu_seconds(pid) - cpu0
        if errors:
            raise errors[0]
        out = {
            "window_s": round(elapsed, 1), "heartbeats": len(lat),
            "heartbeats_per_s": round(len(lat) / elapsed, 1),
            "server_cores": round(cpu / elapsed, 3),
            "server_cpu_ms_per_heartbeat": round(cpu * 1000 / len(lat), 3) if lat else None,
            "heartbeat_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99)},
        }
        if probe:
            api_lat = q.get(timeout=600)
            prober.join()
            out["api_ms"] = {path: {"n": len(v), "p50": percentile(v, 50),
                                    "p99": percentile(v, 99)} for path, v in api_lat.items()}
        return out

    # Heartbeats alone (the CPU per heartbeat), then heartbeats with the API client.
    alone = window(1, probe=False)
    loaded = window(1 + beats_per_worker, probe=True)
    # Idle: no heartbeats, what the timers (liveness, controller sweep) cost on their own. Last,
    # so that no worker goes 60 s without a heartbeat (NOT_READY) because of the benchmark.
    cpu0, t0 = cpu_seconds(pid), time.time()
    time.sleep(args.idle_seconds)
    idle_cores = (cpu_seconds(pid) - cpu0) / (time.time() - t0)
    return {
        "workers": n, "gpus_per_worker": 8, "interval_s": args.interval,
        "target_per_s": round(n / args.interval, 1), "idle_cores": round(idle_cores, 3),
        "heartbeats": alone, "with_api": loaded,
        "register_s": round(t_reg, 1), "first_heartbeats_s": round(t_first, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "controller_passes": controller_passes(server),
        # Workers the liveness controller demoted (no heartbeat for 60 s): a server that fell
        # behind, its workers flapping.
        "not_ready_demotions": log_count(server, "is NOT_READY"),
        "not_ready_demotions_before_windows": first_demotions,
    }



def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--segma", required=True)
    p.add_argument("--workers", default="100,1000")
    p.add_argument("--interval", type=float, default=10)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--idle-seconds", type=float, default=20)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--port", type=int, default=18231)
    p.add_argument("--out", default=".")
    p.add_argument("--tag", default="")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for n in [int(x) for x in args.workers.split(",")]:
        report = run_one(args, n, args.port)
        report["tag"] = args.tag
        line = json.dumps(report)
        print(line, flush=True)
        with open(os.path.join(args.out, "heartbeats.jsonl"), "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
