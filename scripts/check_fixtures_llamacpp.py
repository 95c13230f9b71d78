#!/usr/bin/env python3
"""Optional cross-check of the fixtures against a real llama.cpp build.

Not needed to regenerate anything; it checks that what make_fixtures.py wrote
agrees with llama.cpp itself:
  * tokenizer/cases.json ids == llama.cpp tokenization (parse_special=True, no BOS)
    using the tokenizer embedded in tests/fixtures/tiny-llama.gguf and, if given,
    the full real SmolLM2 GGUF (cases whose ids are all < 512 only differ by merges
    missing from the truncated vocab, so the full model is compared only as info);
  * llama.cpp logits of tests/fixtures/tiny-llama.gguf vs
    tests/fixtures/tiny-llama.gguf.expected_logits.json (llama.cpp quantizes the
    activations to Q8 for Q4/Q8 matmuls, so expect ~1e-2 differences, not 1e-6).

Needs a separate venv with the prebuilt llama.cpp wheel `llama-cpp-py-sync`
(CFFI bindings + libllama.so; numpy and cffi):

    python3 -m venv /tmp/lcvenv
    /tmp/lcvenv/bin/pip install llama-cpp-py-sync
    /tmp/lcvenv/bin/python scripts/check_fixtures_llamacpp.py [--smollm-gguf PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from llama_cpp_py_sync import Llama

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"


def all_logits(llm: Llama, ids: list[int]) -> np.ndarray:
    lib, ffi, ctx = llm._lib, llm._ffi, llm._ctx
    llm._clear_context_state()
    batch = lib.llama_batch_init(len(ids), 0, 1)
    try:
        batch.n_tokens = len(ids)
        for i, t in enumerate(ids):
            batch.token[i] = t
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        rc = lib.llama_decode(ctx, batch)
        assert rc == 0, rc
    finally:
        lib.llama_batch_free(batch)
    n_vocab = lib.llama_vocab_n_tokens(llm._vocab)
    out = np.zeros((len(ids), n_vocab), dtype=np.float32)
    for i in range(len(ids)):
        p = lib.llama_get_logits_ith(ctx, i)
        out[i] = np.frombuffer(ffi.buffer(p, 4 * n_vocab), dtype=np.float32)
    return out


def check_tokenizer(llm: Llama, label: str, strict: bool) -> int:
    cases = json.loads((FIX / "tokenizer" / "cases.json").read_text())
    bad = 0
    for c in cases:
        ids = llm.tokenize(c["text"], add_special=False, parse_special=True)
        if ids != c["ids"]:
            bad += 1
            if strict:
                print(f"  MISMATCH {c['text']!r}\n    fixture  {c['ids']}\n    llama.cpp {ids}")
    print(f"[{label}] tokenizer: {len(cases) - bad}/{len(cases)} cases identical")
    return bad if strict else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm-gguf", help="real SmolLM2-135M-Instruct GGUF (optional, informational)")
    args = ap.parse_args()

    failures = 0
    llm = Llama(str(FIX / "tiny-llama.gguf"), n_ctx=64, n_batch=64, n_threads=2, verbose=False)
    failures += check_tokenizer(llm, "tiny-llama.gguf", strict=True)

    exp = json.loads((FIX / "tiny-llama.gguf.expected_logits.json").read_text())
    worst = 0.0
    for row, ref in zip(exp["input_ids"], exp["logits"]):
        got = all_logits(llm, row)
        ref = np.asarray(ref, dtype=np.float32)
        d = float(np.abs(got - ref).max())
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        print(f"[tiny-llama.gguf] logits row: max |llama.cpp - expected| = {d:.4g}, argmax agreement {agree:.3f}")
        worst = max(worst, d)
    if worst > 0.1:
        print("  logits differ too much (permutation or dequantization mismatch?)")
        failures += 1
    llm.close()

    if args.smollm_gguf:
        full = Llama(args.smollm_gguf, n_ctx=64, n_batch=64, n_threads=2, verbose=False)
        check_tokenizer(full, "SmolLM2 full vocab (info only)", strict=False)
        full.close()

    print("OK" if failures == 0 else f"FAILED ({failures})")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
