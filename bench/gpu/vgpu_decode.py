"""Overhead of libsegma-vgpu on inference (bench/gpu/vgpu.sh): a Llama-3.1-8B-shaped model with
random bf16 weights (transformers, on the GPU), prefill of 512 tokens and greedy decoding of 128
tokens for 1, 8 and 32 sequences at once. Prints one JSON object: per batch, the prefill time (the
time to the first token) and decoded tokens/s per sequence. vgpu.sh runs it with and without the
library, alternating."""
import json
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                  max_position_embeddings=8192, rope_theta=500000.0)
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg)
model.eval()
res = {"preload": os.environ.get("LD_PRELOAD", ""), "limits": os.environ.get("SEGMA_VGPU_LIMITS", "")}
with torch.inference_mode():
    for batch in (1, 8, 32):
        ids = torch.randint(0, 128000, (batch, 512), device="cuda")
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(ids, logits_to_keep=1)
        torch.cuda.synchronize()
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        res[str(batch)] = {"prefill_ms": round(prefill * 1e3, 2),
                           "tokens_per_s_per_seq": round(128 / dt, 2)}
res["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / (1 << 30), 2)
print(json.dumps(res))
