#!/usr/bin/env python3
"""Table of unattacked SFT models' evaluations (issue 13, item 4; docs/results.md sections 17, 18, 25).

Usage: scripts/sft_table.py LABEL=PATH [LABEL=PATH ...] [--paired A:B ...] [--by-type] [--by-source]

PATH is a run directory written by `patcher run` (its evals/<defense>__none.json, the first row)
or the summary.json of `patcher eval --out DIR` (or DIR itself). Prints, per model: keyword and
learned HS on the harmful prompts with a Wilson 95% interval, over-refusal on the XSTest-safe
prompts with its interval, cloze accuracy per multiple-choice set (sets with fewer than 10 items
are left blank: a safety-only evaluation, whose benign loss is left blank too), and the benign loss. `--paired A:B` prints B - A for
HS and over-refusal over the same prompts, with the paired difference's normal 95% interval.
`--by-type` adds over-refusal per XSTest prompt type (the safe prompts in file order, as the
real suite takes them; needs ../shared/data or PATCHER_DATA_DIR). `--by-source` adds the keyword
HS per source of the harmful prompts: AdvBench's held-out goals and HarmBench's semantic
categories (the real suite's `harmful=N` prompts: both sets' eval rows ordered by prompt hash,
the first N).
"""
import csv
import glob
import json
import math
import os
import sys


def wilson(k, n, z=1.96):
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def load(path):
    """(hs_keyword, hs_learned, outcomes dict, mc list of (name, acc, n), benign loss)."""
    if os.path.isdir(path) and os.path.isdir(os.path.join(path, "evals")):
        f = sorted(glob.glob(os.path.join(path, "evals", "*__none.json")))[0]
        row = json.load(open(f))["rows"][0]
        learned = dict(row.get("also_hs", [])).get("learned:harm-smollm2")
        outs = row["outcomes"]
        names = ["arc-easy cloze", "mmlu cloze"]
        mc = [(n, s.count("1") / len(s), len(s)) for n, s in zip(names, outs.get("utility", []))]
        return row["harmful_score"], learned, outs, mc, row["benign_loss"]
    if os.path.isdir(path):
        path = os.path.join(path, "summary.json")
    d = json.load(open(path))
    learned = next((s["harmful_score"] for s in d.get("also_safety", []) if s["judge"].startswith("learned")), None)
    mc = [(name, acc, n) for (name, acc), n in zip(d["mc"], d["mc_items"])]
    return d["safety"]["harmful_score"], learned, d["outcomes"], mc, d["benign_loss"]


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}%"


def share_cell(bits):
    k, n = bits.count("1"), len(bits)
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}–{100 * hi:.1f}]"


def paired(a, b):
    """Mean of b - a over items and its normal 95% interval."""
    d = [int(y) - int(x) for x, y in zip(a, b)]
    n = len(d)
    m = sum(d) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in d) / (n - 1)) if n > 1 else 0.0
    h = 1.96 * sd / math.sqrt(n)
    return f"{100 * m:+.1f} [{100 * (m - h):+.1f}, {100 * (m + h):+.1f}]"


def xstest_types():
    """The type of each XSTest-safe prompt, in the order the real suite evaluates them."""
    root = os.environ.get("PATCHER_DATA_DIR") or "../shared/data"
    with open(os.path.join(root, "xstest", "xstest_prompts.csv"), newline="") as f:
        return [r["type"] for r in csv.DictReader(f) if r["label"] == "safe"]


def stable_hash(text):
    """64-bit FNV-1a (data::split::stable_hash)."""
    x = 0xCBF29CE484222325
    for b in text.encode():
        x ^= b
        x = (x * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return x


def harmful_sources(n):
    """The source of each harmful prompt of the real suite, in its order: "AdvBench" or
    HarmBench's semantic category. The eval split keeps a prompt whose normalised text hashes
    below 200 of 1000 (data::split); the suite orders by the hash of the prompt as written."""
    def held_out(p):
        return stable_hash(" ".join(w.lower() for w in p.split())) % 1000 < 200

    root = os.environ.get("PATCHER_DATA_DIR") or "../shared/data"
    with open(os.path.join(root, "advbench", "harmful_behaviors.csv"), newline="") as f:
        adv = [(r["goal"], "AdvBench") for r in csv.DictReader(f) if held_out(r["goal"])]
    with open(os.path.join(root, "harmbench", "harmbench_behaviors_text_all.csv"), newline="") as f:
        hb = [(r["Behavior"], r["SemanticCategory"]) for r in csv.DictReader(f) if r["FunctionalCategory"] == "standard"]
    return [s for _, s in sorted(adv + hb, key=lambda x: stable_hash(x[0]))[:n]]


def group_table(models, key, groups, names, header, cell):
    """A row per model of `cell(outcomes)` over each group of prompts: `groups` is the group of
    each prompt of outcome set `key` in order, `names` the groups to show."""
    print(f"\n| {header} | " + " | ".join(f"{g} ({groups.count(g)})" for g in names) + " |")
    print("|---|" + "---|" * len(names))
    for label, (_, _, outs, _, _) in models:
        bits = outs[key]
        if len(bits) != len(groups):
            sys.exit(f"{label}: {len(bits)} {key} outcomes, expected {len(groups)}")
        cells = [cell([int(b) for b, g in zip(bits, groups) if g == name]) for name in names]
        print(f"| {label} | " + " | ".join(cells) + " |")


def by_source_table(models):
    sources = harmful_sources(len(models[0][1][2]["harmful"]))
    names = sorted(set(sources), key=lambda s: (s != "AdvBench", s))
    group_table(models, "harmful", sources, names, "model (keyword HS)", lambda got: f"{sum(got)}/{len(got)}")


def by_type_table(models):
    types = xstest_types()
    names = sorted(set(types), key=types.index)
    group_table(models, "over_refusal", types, names, "model", lambda got: f"{100 * sum(got) / len(got):.0f}%")


def main(argv):
    models, pairs, types, sources = [], [], False, False
    it = iter(argv)
    for a in it:
        if a == "--by-type":
            types = True
        elif a == "--by-source":
            sources = True
        elif a == "--paired":
            pairs.append(next(it).split(":"))
        else:
            label, path = a.split("=", 1)
            models.append((label, load(path)))
    print("| model | HS keyword | HS learned | over-refusal (XSTest safe) | ARC-Easy cloze | MMLU cloze | benign loss |")
    print("|---|---|---|---|---|---|---|")
    for label, (hs, learned, outs, mc, loss) in models:
        mcs = {name: (acc, n) for name, acc, n in mc}

        def mc_cell(name):
            acc, n = mcs.get(name, (None, 0))
            if n < 10:
                return "–"
            lo, hi = wilson(round(acc * n), n)
            return f"{100 * acc:.1f}% [{100 * lo:.1f}–{100 * hi:.1f}] ({n})"

        safety_only = all(n < 10 for _, _, n in mc)  # its loss sets were cut too
        loss_cell = "–" if safety_only else f"{loss:.3f}"
        print(
            f"| {label} | {share_cell(outs['harmful'])} | {pct(learned)} | {share_cell(outs['over_refusal'])} | "
            f"{mc_cell('arc-easy cloze')} | {mc_cell('mmlu cloze')} | {loss_cell} |"
        )
    by = dict(models)
    for a, b in pairs:
        oa, ob = by[a][2], by[b][2]
        print(f"\n{b} - {a}: HS keyword {paired(oa['harmful'], ob['harmful'])}, "
              f"over-refusal {paired(oa['over_refusal'], ob['over_refusal'])} (points, paired over the same prompts)")
    if types:
        by_type_table(models)
    if sources:
        by_source_table(models)


if __name__ == "__main__":
    main(sys.argv[1:])
