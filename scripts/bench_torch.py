#!/usr/bin/env python3
"""PyTorch CPU baseline for patcher's training benchmarks.

Measures one training step (forward with loss, backward, torch.optim.AdamW step,
each timed separately) of a randomly initialised transformers LlamaForCausalLM or
Gemma3ForCausalLM, the head and the loss alone on the final hidden states, the
peak resident memory of each shape, plus the fp32 matmul peak of this machine,
and prints one JSON object per line.

Shapes:
  smollm2-135m  vocab 49152, hidden 576, intermediate 1536, 30 layers, 9 heads,
                3 KV heads, tied embeddings; batch 4 x 128 tokens
  tiny          vocab 1024, hidden 128, intermediate 384, 4 layers, 4 heads,
                2 KV heads; batch 8 x 64 tokens
  gemma3-270m   Gemma 3 270M (Gemma3TextConfig): vocab 262144, hidden 640,
                intermediate 2048, 18 layers (every 6th global, sliding window 512),
                4 heads, 1 KV head, head_dim 256, tied embeddings; batch 4 x 128 tokens
                (268,098,176 parameters)
--shape all runs tiny and smollm2-135m (as `patcher bench train-step --shape all`);
name shapes with commas for others (`--shape smollm2-135m,gemma3-270m`).

Attention: --attn sdpa (the default; torch's scaled_dot_product_attention, which
transformers 5 uses for both models) or eager.

Peak memory: before each shape the process's resident-set high-water mark is
reset (writing 5 to /proc/self/clear_refs, Linux) and VmHWM is read after its
timed steps, exactly as patcher's benchmark does (src/bench/memory.rs), so both
are the peak of one shape in a process that ran the earlier ones. In MiB; null
where /proc is not available (ru_maxrss would be the lifetime peak).

Usage (needs only torch and transformers: scripts/requirements-bench.txt):
    python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -r scripts/requirements-bench.txt
    /tmp/benchvenv/bin/python scripts/bench_torch.py --shape all --threads 2 --steps 5 --warmup 2 [--bf16]

Output lines:
  {"what":"train_step","shape":"smollm2-135m","batch":4,"seq":128,"dtype":"fp32",
   "forward_s":..,"backward_s":..,"optimizer_s":..,"total_s":..,"tokens_per_s":..,"params":..,
   "peak_rss_mb":..,"start_rss_mb":..,"head_loss_forward_s":..,"head_loss_backward_s":..,...}
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
    # The hub's config.json of google/gemma-3-270m, in transformers 5's Gemma3TextConfig form.
    "gemma3-270m": dict(
        arch="gemma3",
        config=dict(
            vocab_size=262144,
            hidden_size=640,
            intermediate_size=2048,
            num_hidden_layers=18,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=512,
            layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            },
            hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            use_bidirectional_attention=False,
            bos_token_id=2,
            eos_token_id=1,
            pad_token_id=0,
        ),
        batch=4,
        seq=128,
    ),
}
ALL = ["tiny", "smollm2-135m"]


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def status_mb(field: str) -> float | None:
    """A kB field of /proc/self/status (VmHWM, VmRSS) in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.split(":")[0] == field:
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def build_model(spec: dict):
    if spec.get("arch") == "gemma3":
        cfg = transformers.Gemma3TextConfig(**spec["config"])
        return cfg, transformers.Gemma3ForCausalLM
    return transformers.LlamaConfig(**spec["config"]), transformers.LlamaForCausalLM


def bench_head_loss(model, ids, steps: int, warmup: int) -> tuple[float, float, float | None]:
    """The head and the loss alone (as the model's forward applies them, in fp32 also under
    --bf16) on the final hidden states: median forward and backward seconds, and the peak MiB
    above the start."""
    with torch.no_grad():
        h = model.model(input_ids=ids).last_hidden_state
    start = status_mb("VmRSS") if reset_peak_rss() else None
    fwd, bwd = [], []
    for step in range(warmup + steps):
        model.zero_grad(set_to_none=True)
        hh = h.detach().requires_grad_()
        t0 = time.perf_counter()
        logits = model.lm_head(hh)
        loss = model.loss_function(logits, ids, model.config.vocab_size)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if step >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    peak = status_mb("VmHWM")
    extra = peak - start if start is not None and peak is not None else None
    model.zero_grad(set_to_none=True)
    return statistics.median(fwd), statistics.median(bwd), extra


def bench_train(shape: str, steps: int, warmup: int, bf16: bool, attn: str, lr: float) -> dict:
    spec = SHAPES[shape]
    start_rss = status_mb("VmRSS") if reset_peak_rss() else None
    torch.manual_seed(0)
    cfg, cls = build_model(spec)
    cfg._attn_implementation = attn
    model = cls(cfg).float().train()
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
    peak_rss = status_mb("VmHWM") if start_rss is not None else None
    opt.zero_grad(set_to_none=True)
    hf, hb, h_extra = bench_head_loss(model, ids, steps, warmup)
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
        "peak_rss_mb": None if peak_rss is None else round(peak_rss, 1),
        "start_rss_mb": None if start_rss is None else round(start_rss, 1),
        "head_loss_forward_s": round(hf, 6),
        "head_loss_backward_s": round(hb, 6),
        "head_loss_extra_mb": None if h_extra is None else round(h_extra, 1),
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
    ap.add_argument("--shape", default="all", help=f"all ({', '.join(ALL)}) or names joined by commas: {', '.join(SHAPES)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward pass")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-matmul", action="store_true", help="skip the matmul peak measurement")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    shapes = ALL if args.shape == "all" else args.shape.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown shape(s) {unknown}; known: {', '.join(SHAPES)}")
    if not args.no_matmul:
        print(json.dumps(bench_matmul()), flush=True)
    for shape in shapes:
        print(json.dumps(bench_train(shape, args.steps, args.warmup, args.bf16, args.attn, args.lr)), flush=True)


if __name__ == "__main__":
    main()
