#!/usr/bin/env python3
"""Optional cross-check of the fixtures against a real llama.cpp build.

Not needed to regenerate anything; it checks that what make_fixtures.py wrote
agrees with llama.cpp itself:
  * tokenizer/cases.json ids == llama.cpp tokenization (parse_special=True, no BOS)
    with the truncated tokenizer embedded in tests/fixtures/tiny-llama.gguf;
  * with --smollm-gguf: the same HF `tokenizers` construction applied to the FULL
    49,152-token SmolLM2 vocab gives the same ids as llama.cpp on the real GGUF;
  * llama.cpp logits of tests/fixtures/tiny-llama.gguf (f32 KV cache) vs
    tests/fixtures/tiny-llama.gguf.expected_logits.json. llama.cpp's CPU matmuls
    quantize the activations (Q8_0/Q8_1 for Q4_0/Q4_1/Q8_0 weights, F16 for F16
    weights), so expect ~0.1-0.2 max abs differences here, against ~1.5 between
    the expected logits and the original fp32 model: the check requires llama.cpp
    to be far closer to the dequantized reference than to the fp32 model, with
    identical argmax. (An all-F32 GGUF with the same layout agrees with
    transformers to ~4e-6, which is how the q/k permutation was validated.)

Needs a separate venv with the prebuilt llama.cpp wheel `llama-cpp-py-sync`
(CFFI bindings + libllama.so) plus gguf and tokenizers:

    python3 -m venv /tmp/lcvenv
    /tmp/lcvenv/bin/pip install llama-cpp-py-sync gguf==0.19.0 tokenizers==0.23.3
    /tmp/lcvenv/bin/python scripts/check_fixtures_llamacpp.py [--smollm-gguf PATH]

The wheel's libraries need glibc >= 2.38 (only for the __isoc23_strto*/sscanf
symbols); on an older glibc see the notes in tests/fixtures/README.md.
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


def check_full_vocab(gguf_path: str) -> int:
    """HF construction over the full vocab vs llama.cpp on the real GGUF."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_fixtures import TOKENIZER_CASES, build_hf_tokenizer, read_smollm_tokenizer_meta

    meta = read_smollm_tokenizer_meta(gguf_path)
    tokens = meta["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in meta["merges"]]
    hf = build_hf_tokenizer(tokens, vocab, merges)
    full = Llama(gguf_path, n_ctx=64, n_batch=64, n_threads=2, verbose=False)
    bad = 0
    for text in TOKENIZER_CASES:
        a = hf.encode(text, add_special_tokens=False).ids
        b = full.tokenize(text, add_special=False, parse_special=True)
        if a != b:
            bad += 1
            print(f"  MISMATCH {text!r}\n    HF        {a}\n    llama.cpp {b}")
    full.close()
    print(f"[SmolLM2 full vocab] HF construction vs llama.cpp: {len(TOKENIZER_CASES) - bad}/{len(TOKENIZER_CASES)} identical")
    return bad


def check_dequant() -> int:
    """ggml's own to_float on every tensor of tiny-llama.gguf vs gguf-py's dequantize (must be bit-identical)."""
    import cffi
    import gguf
    import llama_cpp_py_sync

    ffi = cffi.FFI()
    ffi.cdef("""
    typedef void (*ggml_to_float_t)(const void * x, float * y, int64_t k);
    typedef void (*ggml_from_float_t)(const float * x, void * y, int64_t k);
    struct ggml_type_traits { const char * type_name; int64_t blck_size; int64_t blck_size_interleave;
                              size_t type_size; bool is_quantized; ggml_to_float_t to_float;
                              ggml_from_float_t from_float_ref; };
    const struct ggml_type_traits * ggml_get_type_traits(int type);
    """)
    lib = ffi.dlopen(str(Path(llama_cpp_py_sync.__file__).parent / "libggml-base.so.0"))
    worst = 0.0
    for t in gguf.GGUFReader(str(FIX / "tiny-llama.gguf")).tensors:
        ref = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            continue
        src = np.ascontiguousarray(t.data)
        out = np.zeros(int(t.n_elements), dtype=np.float32)
        lib.ggml_get_type_traits(int(t.tensor_type)).to_float(
            ffi.cast("void *", src.ctypes.data), ffi.cast("float *", out.ctypes.data), out.size)
        worst = max(worst, float(np.abs(out - ref).max()))
    print(f"[tiny-llama.gguf] ggml to_float vs gguf-py dequantize: max diff {worst}")
    return int(worst != 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm-gguf", help="real SmolLM2-135M-Instruct GGUF (optional, informational)")
    args = ap.parse_args()

    failures = 0
    # f32 KV cache: the default f16 cache alone costs ~5e-3 on these logits
    llm = Llama(str(FIX / "tiny-llama.gguf"), n_ctx=64, n_batch=64, n_threads=2, verbose=False,
                type_k="f32", type_v="f32")
    failures += check_tokenizer(llm, "tiny-llama.gguf", strict=True)
    failures += check_dequant()

    exp = json.loads((FIX / "tiny-llama.gguf.expected_logits.json").read_text())
    orig = json.loads((FIX / "tiny-llama" / "expected_logits.json").read_text())
    assert orig["input_ids"] == exp["input_ids"]
    for row, ref, ref32 in zip(exp["input_ids"], exp["logits"], orig["logits"]):
        got = all_logits(llm, row)
        ref = np.asarray(ref, dtype=np.float32)
        ref32 = np.asarray(ref32, dtype=np.float32)
        d = float(np.abs(got - ref).max())
        d32 = float(np.abs(got - ref32).max())
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        print(f"[tiny-llama.gguf] logits row: max |llama.cpp - expected| = {d:.4g} "
              f"(vs original fp32 model: {d32:.4g}), argmax agreement {agree:.3f}")
        if not (d < 0.3 and d < d32 / 4 and agree == 1.0):
            print("  logits differ too much (permutation or dequantization mismatch?)")
            failures += 1
    llm.close()

    if args.smollm_gguf:
        failures += check_full_vocab(args.smollm_gguf)

    print("OK" if failures == 0 else f"FAILED ({failures})")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
