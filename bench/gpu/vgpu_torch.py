"""PyTorch under libsegma-vgpu (bench/gpu/vgpu.sh): what a limited process sees and what happens
past its limit. Prints one JSON object. Run with LD_PRELOAD=libsegma-vgpu.so and
SEGMA_VGPU_LIMITS=0=<bytes>; optionally PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True."""
import json
import os
import sys

import torch

GiB = 1 << 30
res = {"alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
       "limits": os.environ.get("SEGMA_VGPU_LIMITS", ""), "torch": torch.__version__}
free, total = torch.cuda.mem_get_info()
res["mem_get_info_total_gib"] = round(total / GiB, 3)
res["mem_get_info_free_gib"] = round(free / GiB, 3)
res["device_total_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GiB, 3)


def try_alloc(gib):
    try:
        t = torch.empty(int(gib * GiB), dtype=torch.uint8, device="cuda")
        t.fill_(1)
        torch.cuda.synchronize()
        return t, "ok"
    except torch.OutOfMemoryError as e:
        return None, "OutOfMemoryError: " + str(e).split("\n")[0][:160]


t, res["alloc_11gib"] = try_alloc(11)
del t
torch.cuda.empty_cache()
t, res["alloc_9gib_after"] = try_alloc(9)          # the process goes on and can use its slice
u, res["alloc_2gib_more"] = try_alloc(2)            # 9 + 2 > 10: refused
del t, u
torch.cuda.empty_cache()
t, res["alloc_4gib_after_free"] = try_alloc(4)      # the room came back
del t
torch.cuda.empty_cache()

# A CUDA graph: capture, replay, an over-limit allocation outside it, replay again.
x = torch.ones(1 << 20, device="cuda")
g = torch.cuda.CUDAGraph()
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(3):
        y = x * 2 + 1
torch.cuda.current_stream().wait_stream(s)
with torch.cuda.graph(g):
    y = x * 2 + 1
x.fill_(3)
g.replay()
torch.cuda.synchronize()
ok1 = bool((y == 7).all())
t, over = try_alloc(11)
x.fill_(5)
g.replay()
torch.cuda.synchronize()
res["cuda_graph"] = {"replay_ok": ok1, "alloc_11gib_after_capture": over,
                     "replay_after_refusal_ok": bool((y == 11).all())}
# Work goes on at full speed: a bf16 matmul in the slice.
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    a @ b
end.record()
torch.cuda.synchronize()
res["matmul_tflops"] = round(20 * 2 * 8192 ** 3 / (start.elapsed_time(end) / 1e3) / 1e12, 1)
res["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GiB, 3)
print(json.dumps(res))
