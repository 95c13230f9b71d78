#!/usr/bin/env python3
"""Check that a model directory written by patcher loads and runs in Hugging Face transformers.

Usage (from the repository root, with the fixture venv of scripts/requirements-fixtures.txt):

    /tmp/fxvenv/bin/python scripts/check_transformers_load.py MODEL_DIR [--compare-logits EXPECTED_JSON] [--tol 1e-3]
        [--prompt TEXT] [--reference-gguf FILE.gguf]

It loads MODEL_DIR with AutoModelForCausalLM (fp32, eager attention, CPU) and AutoTokenizer,
prints the parameter count, and prints a greedy answer (at most 20 new tokens) to the chat-formatted
question "What is the capital of France?". With --compare-logits, EXPECTED_JSON holds
{"input_ids": [B][T], "logits": [B][T][V]} (the format of tests/fixtures/*/expected_logits.json);
the script computes the model's logits for those input_ids and prints the max |difference|, failing
when it exceeds --tol.

--prompt TEXT also greedy-completes TEXT as plain text (no chat template; the tokenizer adds its
BOS if its config says so), which is the fair question for a base model such as Gemma 3 270M.
With --reference-gguf, the GGUF file MODEL_DIR was imported from is loaded by transformers' own
GGUF loader (dequantized to fp32) as the reference: every tensor of the state dict must match
within --tol-weights, the logits of the prompt within --tol, the greedy continuations of the
prompt must be identical, and so must both tokenizers' ids on a few tricky strings.

Exit status: 0 on success, 1 on any failure (load error, generation error, shape mismatch,
non-finite logits, difference above --tol).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback

QUESTION = "What is the capital of France?"


def load(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(attn_implementation="eager")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kwargs)
    except TypeError:  # transformers older than 4.56 only knows `torch_dtype`
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, **kwargs)
    model = model.float().eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model, tok


def greedy_answer(model, tok, max_new_tokens: int = 20) -> str:
    import torch

    messages = [{"role": "user", "content": QUESTION}]
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    else:
        print("warning: the tokenizer has no chat template; using the bare question", file=sys.stderr)
        ids = tok.encode(QUESTION)
    ids = [int(i) for i in ids]
    prompt = torch.tensor([ids], dtype=torch.long)
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if eos is None:
        eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos if isinstance(eos, int) else None)
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
    new = out[0, len(ids):].tolist()
    print(f"prompt: {len(ids)} tokens; generated {len(new)} tokens: {new}")
    return tok.decode(new, skip_special_tokens=True)


def compare_logits(model, path: str, tol: float) -> bool:
    import torch

    with open(path, encoding="utf-8") as f:
        expected = json.load(f)
    if "input_ids" not in expected or "logits" not in expected:
        print(f"error: {path} needs `input_ids` and `logits`", file=sys.stderr)
        return False
    input_ids = torch.tensor(expected["input_ids"], dtype=torch.long)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    want = torch.tensor(expected["logits"], dtype=torch.float32)
    if want.dim() == 2:
        want = want[None]
    with torch.no_grad():
        got = model(input_ids=input_ids).logits.float()
    if tuple(got.shape) != tuple(want.shape):
        print(f"error: logits shape {tuple(got.shape)} but {path} has {tuple(want.shape)}", file=sys.stderr)
        return False
    if not torch.isfinite(got).all():
        print("error: the model's logits are not all finite", file=sys.stderr)
        return False
    diff = (got - want).abs()
    max_diff = diff.max().item()
    same_argmax = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    print(f"logits {tuple(got.shape)}: max |diff| = {max_diff:.3e} (tol {tol:g}); argmax agreement {same_argmax:.3f}")
    if not (math.isfinite(max_diff) and max_diff <= tol):
        print(f"error: max |diff| {max_diff:.3e} exceeds --tol {tol:g}", file=sys.stderr)
        return False
    return True


def plain_greedy(model, tok, text: str, max_new_tokens: int) -> list[int]:
    import torch

    ids = torch.tensor([tok(text).input_ids], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


TRICKY = ["The capital of France is", "  two  spaces\n\nand lines\t", "naïve 東京 🤖 12345",
          "<start_of_turn>user\nHi<end_of_turn>\n", "<bos><eos><pad>", "x" * 50 + " " * 10]


def compare_with_gguf(model, tok, gguf: str, prompt: str, max_new_tokens: int, tol: float, tol_w: float) -> bool:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = os.path.split(os.path.abspath(gguf))
    # Already fp32 (dequantized); `.float()` is refused on a model loaded from GGUF.
    ref = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(where, gguf_file=name)
    ok = True
    ours, theirs = model.state_dict(), ref.state_dict()
    if sorted(ours) != sorted(theirs):
        print(f"error: tensor names differ: {sorted(set(ours) ^ set(theirs))[:10]}", file=sys.stderr)
        return False
    worst, worst_name = 0.0, ""
    for k, v in theirs.items():
        d = (ours[k].float() - v.float()).abs().max().item() if v.numel() else 0.0
        if d >= worst:
            worst, worst_name = d, k
    print(f"weights vs transformers' GGUF load: {len(theirs)} tensors, max |diff| = {worst:.3e} ({worst_name})")
    ok &= worst <= tol_w
    bad = [t for t in TRICKY if tok(t).input_ids != ref_tok(t).input_ids]
    print(f"tokenizer vs transformers' GGUF conversion: {len(TRICKY) - len(bad)}/{len(TRICKY)} strings identical")
    ok &= not bad
    ids = torch.tensor([tok(prompt).input_ids], dtype=torch.long)
    with torch.no_grad():
        d = (model(ids).logits - ref(ids).logits).abs().max().item()
    print(f"logits of the prompt ({ids.shape[1]} tokens): max |diff| = {d:.3e} (tol {tol:g})")
    ok &= d <= tol
    a, b = plain_greedy(model, tok, prompt, max_new_tokens), plain_greedy(ref, ref_tok, prompt, max_new_tokens)
    print(f"greedy continuation identical: {a == b}; reference: {ref_tok.decode(b)!r}")
    ok &= a == b
    if not ok:
        print("error: the imported model differs from transformers' GGUF load", file=sys.stderr)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", help="Hugging Face model directory (config.json, *.safetensors, tokenizer files)")
    ap.add_argument("--compare-logits", metavar="EXPECTED_JSON", help='JSON with "input_ids" and "logits"')
    ap.add_argument("--tol", type=float, default=1e-3, help="largest accepted max |logit difference| (default 1e-3)")
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--prompt", help="also greedy-complete this plain text (no chat template)")
    ap.add_argument("--reference-gguf", metavar="FILE", help="compare with transformers' load of this GGUF")
    ap.add_argument("--tol-weights", type=float, default=1e-6, help="largest accepted weight difference (default 1e-6)")
    args = ap.parse_args()
    if not os.path.isdir(args.model_dir):
        print(f"error: {args.model_dir} is not a directory", file=sys.stderr)
        return 1
    # A local directory only: never fall back to a hub lookup.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    torch.manual_seed(0)
    try:
        model, tok = load(args.model_dir)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"loaded {args.model_dir}: {type(model).__name__}, {n_params:,} parameters "
              f"({model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
              f"vocab {model.config.vocab_size})")
        answer = greedy_answer(model, tok, args.max_new_tokens)
        print(f"Q: {QUESTION}\nA: {answer!r}")
        ok = True
        if args.compare_logits:
            ok = compare_logits(model, args.compare_logits, args.tol)
        prompt = args.prompt or ("The capital of France is" if args.reference_gguf else None)
        if prompt is not None:
            new = plain_greedy(model, tok, prompt, args.max_new_tokens)
            print(f"plain: {prompt!r} -> {tok.decode(new)!r}")
        if args.reference_gguf:
            ok &= compare_with_gguf(model, tok, args.reference_gguf, prompt, args.max_new_tokens, args.tol,
                                    args.tol_weights)
    except Exception:  # noqa: BLE001 - any failure is a failed check
        traceback.print_exc()
        return 1
    if not ok:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
