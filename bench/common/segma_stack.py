"""A segma stack for the benchmark scripts (python3 stdlib only): `segma start` in a scratch data
dir, an admin session, a project and an inference key, deployments through the REST API, and
`segma bench load` runs appended to OUT/load.jsonl."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

MiB = 1024 * 1024
PASSWORD = "bench-admin-password"


def rss_kib(pid):
    """Resident memory of process `pid`, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Api:
    def __init__(self, base):
        self.base = base
        self.token = None

    def call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                text = res.read().decode()
                return res.status, (json.loads(text) if text else {})
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"raw": text}

    def ok(self, method, path, body=None):
        status, obj = self.call(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path} -> {status}: {obj}")
        return obj


class Stack:
    """`segma start` (server + gateway + embedded worker).

    args needs: segma (binary), work (scratch dir), out (results dir); optional engine_dir
    (llama.cpp binaries), model_file (for deploy), extra (more `segma start` flags), prefix
    (command prefix such as ["taskset", "-c", "1"]).
    """

    def __init__(self, args, port=18080):
        self.args = args
        self.port = port
        self.api = Api(f"http://127.0.0.1:{self.port}")
        self.data = os.path.join(args.work, "data")
        self.proc = None

    def start(self):
        subprocess.run(["rm", "-rf", self.data], check=True)
        env = dict(os.environ, SEGMA_BOOTSTRAP_PASSWORD=PASSWORD)
        log = open(os.path.join(self.args.out, "segma.log"), "w")
        cmd = list(getattr(self.args, "prefix", None) or []) + [
            self.args.segma, "start", "--no-demo", "--data-dir", self.data, "--address", "127.0.0.1",
            "--port", str(self.port), "--heartbeat-interval", "1"]
        if getattr(self.args, "engine_dir", None):
            cmd += ["--engine-dir", "llama.cpp=" + self.args.engine_dir]
        cmd += list(getattr(self.args, "extra", None) or [])
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait(lambda: self.api.call("GET", "/healthz")[0] == 200, 60, "segma /healthz")
        self.api.token = self.api.ok("POST", "/v2/auth/login",
                                     {"username": "admin", "password": PASSWORD})["token"]
        self.project = self.api.ok("POST", "/v2/projects", {"name": "gpu-bench"})["id"]
        created = self.api.ok("POST", "/v2/api-keys", {
            "name": "bench", "project_id": self.project, "scope": "inference",
            "allowed_models": "*"})
        self.key, self.key_id = created["secret"], created["id"]
        wait(lambda: any(g.get("memory_total", 0) > 0 for g in self.gpus()), 60,
             "the worker's GPUs")

    def stop(self):
        if self.proc:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        # Engines lead their own process groups and outlive segma by design (adoption): kill
        # the groups the supervisor's state files name.
        engines = os.path.join(self.data, "worker", "engines")
        for name in os.listdir(engines) if os.path.isdir(engines) else []:
            try:
                pid = json.load(open(os.path.join(engines, name)))["pid"]
                os.killpg(pid, signal.SIGKILL)
            except (ValueError, KeyError, OSError):
                pass

    def engine_pids(self):
        """instance id → engine pid, from the supervisor's state files."""
        engines = os.path.join(self.data, "worker", "engines")
        out = {}
        for name in os.listdir(engines) if os.path.isdir(engines) else []:
            try:
                out[int(name.split("-")[1].split(".")[0])] = json.load(
                    open(os.path.join(engines, name)))["pid"]
            except (ValueError, KeyError, OSError, IndexError):
                pass
        return out

    def engine_key(self, instance_id):
        """The secret instance `instance_id`'s engine requires (docs/adr/0035-engine-secrets.md),
        for requests straight to its port."""
        path = os.path.join(self.data, "worker", "engines", f"instance-{instance_id}.key")
        with open(path) as f:
            return f.readline().strip()

    def usage_records(self):
        """The gateway's usage records from /metrics: {"written", "dropped", "queued"}."""
        with urllib.request.urlopen(self.api.base + "/metrics", timeout=10) as res:
            text = res.read().decode()
        out = {}
        for line in text.splitlines():
            for key, prefix in (("written", 'segma_gateway_usage_records_total{outcome="written"} '),
                                ("dropped", 'segma_gateway_usage_records_total{outcome="dropped"} '),
                                ("queued", "segma_gateway_usage_queued_records ")):
                if line.startswith(prefix):
                    out[key] = int(float(line[len(prefix):]))
        return out

    def gpus(self):
        return self.api.ok("GET", "/v2/gpus")["items"]

    def workers(self):
        return self.api.ok("GET", "/v2/workers")["items"]

    def deploy(self, name, ctx=0, parallel=0, gpus_per_replica=0, timeout=600, body=None):
        """Deploys the llama.cpp model file (or `body`, a whole model) and waits for RUNNING."""
        if body is None:
            body = {"backend": "llama.cpp",
                    "source": {"type": "local_path", "path": self.args.model_file},
                    "context_length": ctx, "max_concurrent_sequences": parallel}
        body = dict(body, name=name, project_id=self.project, replicas=body.get("replicas", 1))
        if gpus_per_replica:
            body["gpu_selector"] = {"gpus_per_replica": gpus_per_replica}
        t0 = time.time()
        model = self.api.ok("POST", "/v2/models", body)

        def running():
            inst = self.instance(model["id"])
            if inst and inst["state"] == "ERROR":
                raise RuntimeError(f"{name}: ERROR {inst['state_message']}")
            if inst and inst.get("unschedulable_reasons") and time.time() - t0 > 10:
                raise RuntimeError(f"{name}: unschedulable {inst['unschedulable_reasons']}")
            return inst and inst["state"] == "RUNNING"
        wait(running, timeout, f"{name} RUNNING")
        inst = self.instance(model["id"])
        inst["seconds_to_running"] = round(time.time() - t0, 1)
        return model, inst

    def instance(self, model_id):
        items = self.instances(model_id)
        return items[0] if items else None

    def instances(self, model_id):
        return self.api.ok("GET", f"/v2/model-instances?model_id={model_id}")["items"]

    def load(self, url, model, concurrency, requests, key=None, max_tokens=256, words=200,
             tag="", extra=(), prefix=(), warmup=None):
        return run_load(self.args, url, model, concurrency, requests, key, max_tokens, words, tag,
                        extra, prefix, warmup)


def run_load(args, url, model, concurrency, requests, key=None, max_tokens=256, words=200,
             tag="", extra=(), prefix=(), warmup=None):
    """One `segma bench load` run; returns its JSON report (also appended to load.jsonl)."""
    out = os.path.join(args.out, "load.jsonl")
    cmd = list(prefix) + [
        args.segma, "bench", "load", "--url", url, "--model", model,
        "-c", str(concurrency), "-n", str(requests),
        "--warmup", str(min(concurrency, 4) if warmup is None else warmup),
        "--max-tokens", str(max_tokens), "--ignore-eos", "--prompt-words", str(words),
        "--seed", str(int(time.time() * 1000) % 1000003), "--json", "-"] + list(extra)
    if key:
        cmd += ["--key", key]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    sys.stderr.write(res.stdout.split("{", 1)[0])
    report = json.loads(res.stdout[res.stdout.index("{"):])
    report["tag"] = tag
    with open(out, "a") as f:
        f.write(json.dumps(report) + "\n")
    return report


def wait(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except RuntimeError:
            raise
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")
