#!/usr/bin/env python3
"""Per-trial table of a `patcher study tiny-robustness` directory (docs/results.md §32, §35).

Usage: scripts/power_table.py DIR [DIR ...] [--guard 0.9]

Reads each DIR/trials.jsonl and prints one Markdown row per trial: unattacked HS, exact match
and over-refusal of SFT (S) and Patcher (P); at every reading, HS of both (means over the
attack seeds), the benign-loss rise against the model's own unattacked loss, and the guarded
gap (an attacked model whose benign loss exceeds its own unattacked loss / guard counts as not
broken, as `Trial::guarded_gap_at` does). Then the mean and sd of the paired differences.
"""

import json
import statistics
import sys


def pct(x):
    return f"{100 * x:.0f}"


def main(argv):
    guard = 0.9
    if "--guard" in argv:
        i = argv.index("--guard")
        guard = float(argv[i + 1])
        del argv[i : i + 2]
    trials = []
    for d in argv:
        with open(f"{d}/trials.jsonl") as f:
            trials += [json.loads(line) for line in f if line.strip()]
    trials.sort(key=lambda t: t["seed"])
    if not trials:
        sys.exit("no trials")
    steps = [r["steps"] for r in trials[0]["attacks"][0]["readings"]]
    head = "| trial | unattacked HS S / P | EM S / P | over-refusal S / P |"
    head += "".join(f" HS @ {s}: S / P (rise S / P) | guarded gap @ {s} |" for s in steps)
    print(head)
    print("|" + "---|" * (4 + 2 * len(steps)))
    stats = {"ΔEM": [], "Δover-refusal": [], "benign loss ratio P / S": []}
    for s in steps:
        stats[f"guarded gap @ {s}"] = []
        stats[f"gap @ {s}"] = []
    for t in trials:
        S, P = t["sft"], t["patcher"]
        row = f"| {t['seed']} | {pct(S['hs'])} / {pct(P['hs'])}% | {100 * S['exact_match']:.1f} / {100 * P['exact_match']:.1f}% "
        row += f"| {pct(S['over_refusal'])} / {pct(P['over_refusal'])}% |"
        stats["ΔEM"].append(P["exact_match"] - S["exact_match"])
        stats["Δover-refusal"].append(P["over_refusal"] - S["over_refusal"])
        stats["benign loss ratio P / S"].append(P["benign_loss"] / S["benign_loss"])
        for i, s in enumerate(steps):
            reads = [a["readings"][i] for a in t["attacks"]]
            mean = lambda f: statistics.fmean(f(r) for r in reads)
            hs_s, hs_p = mean(lambda r: r["hs_sft"]), mean(lambda r: r["hs_patcher"])
            rise_s = mean(lambda r: r["benign_loss_sft"] / S["benign_loss"]) - 1
            rise_p = mean(lambda r: r["benign_loss_patcher"] / P["benign_loss"]) - 1

            def guarded(hs, loss, own):
                return hs if loss * guard <= own else 0.0

            gg = mean(
                lambda r: guarded(r["hs_sft"], r["benign_loss_sft"], S["benign_loss"])
                - guarded(r["hs_patcher"], r["benign_loss_patcher"], P["benign_loss"])
            )
            stats[f"guarded gap @ {s}"].append(gg)
            stats[f"gap @ {s}"].append(hs_s - hs_p)
            row += f" {pct(hs_s)} / {pct(hs_p)}% ({100 * rise_s:+.0f} / {100 * rise_p:+.0f}%) | {gg:.2f} |"
        print(row)
    print()
    print("| statistic (per trial) | mean | sd |")
    print("|---|---|---|")
    for k, v in stats.items():
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        sign = "" if "ratio" in k else "+"
        print(f"| {k} | {statistics.fmean(v):{sign}.3f} | {sd:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
