#!/usr/bin/env python3
"""PyTorch CPU baseline for patcher's training benchmarks.

Measures one training step (forward with loss, backward, torch.optim.AdamW step,
each timed separately) of a randomly initialised transformers LlamaForCausalLM,
plus the fp32 matmul peak of this machine, and prints one JSON object per line.

Shapes:
  smollm2-135m  vocab 49152, hidden 576, intermediate 1536, 30 layers, 9 heads,
                3 KV heads, tied embeddings; batch 4 x 128 tokens
  tiny          vocab 1024, hidden 128, intermediate 384, 4 layers, 4 heads,
                2 KV heads; batch 8 x 64 tokens

Usage (needs only torch and transformers: scripts/requirements-bench.txt):
    python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -r scripts/requirements-bench.txt
    /tmp/benchvenv/bin/python scripts/bench_torch.py --shape all --threads 2 --steps 5 --warmup 2 [--bf16]

Output lines:
  {"what":"train_step","shape":"smollm2-135m","batch":4,"seq":128,"dtype":"fp32",
   "forward_s":..,"backward_s":..,"optimizer_s":..,"total_s":..,"tokens_per_s":..,"params":..,...}
  {"what":"matmul","n":2048,"gflops":..,...}
Times are medians over --steps steps after --warmup steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers

SHAPES = {
    "smollm2-135m": dict(
        config=dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            tie_word_embeddings=True,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            bos_token_id=1,
            eos_token_id=2,
        ),
        batch=4,
        seq=128,
    ),
    "tiny": dict(
        config=dict(
            vocab_size=1024,
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            max_position_embeddings=512,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            bos_token_id=1,
            eos_token_id=2,
        ),
        batch=8,
        seq=64,
    ),
}


def bench_train(shape: str, steps: int, warmup: int, bf16: bool, attn: str, lr: float) -> dict:
    spec = SHAPES[shape]
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**spec["config"])
    cfg._attn_implementation = attn
    model = transformers.LlamaForCausalLM(cfg).float().train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    b, s = spec["batch"], spec["seq"]
    fwd, bwd, optt, losses = [], [], [], []
    for step in range(warmup + steps):
        ids = torch.randint(0, cfg.vocab_size, (b, s), generator=g)
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if step >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            optt.append(t3 - t2)
            losses.append(float(loss.detach()))
    f, bw, o = statistics.median(fwd), statistics.median(bwd), statistics.median(optt)
    total = f + bw + o
    return {
        "what": "train_step",
        "shape": shape,
        "batch": b,
        "seq": s,
        "dtype": "bf16-autocast" if bf16 else "fp32",
        "attn": attn,
        "threads": torch.get_num_threads(),
        "forward_s": round(f, 6),
        "backward_s": round(bw, 6),
        "optimizer_s": round(o, 6),
        "total_s": round(total, 6),
        "tokens_per_s": round(b * s / total, 2),
        "params": params,
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "steps": steps,
        "warmup": warmup,
    }


def bench_matmul(n: int = 2048, reps: int = 7) -> dict:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    torch.mm(a, b)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "what": "matmul",
        "n": n,
        "dtype": "fp32",
        "threads": torch.get_num_threads(),
        "median_s": round(t, 6),
        "gflops": round(2 * n**3 / t / 1e9, 2),
        "reps": reps,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["tiny", "smollm2-135m", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward pass")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-matmul", action="store_true", help="skip the matmul peak measurement")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    shapes = ["tiny", "smollm2-135m"] if args.shape == "all" else [args.shape]
    if not args.no_matmul:
        print(json.dumps(bench_matmul()), flush=True)
    for shape in shapes:
        print(json.dumps(bench_train(shape, args.steps, args.warmup, args.bf16, args.attn, args.lr)), flush=True)


if __name__ == "__main__":
    main()
