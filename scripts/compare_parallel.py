"""Sequential vs parallel Patcher on SmolLM2 (scripts/smollm2_parallel.sh): per-step wall-clock,
critical path, losses at the end of hardening, and HS/utility under the AdamW 5e-5 attack.
Usage: python3 scripts/compare_parallel.py RUN_DIR PARALLEL_DIR P"""
import json
import statistics
import sys
from pathlib import Path

run, par, p = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


def metrics(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def train_row(name, rows):
    last = rows[-5:]
    mean = lambda k: statistics.mean(r[k] for r in last)
    return (f"| {name} | {len(rows)} | {statistics.median(r['seconds'] for r in rows):.1f} | {rows[-1]['passes']} "
            f"| {mean('retain_loss'):.3f} | {mean('tr_loss'):.3f} | {mean('harmful_loss_end'):.3f} |")


par_m = metrics(par / f"patcher-k4-par{p}/train/metrics.jsonl")
# The same number of outer steps of the sequential run (constant schedules: a prefix of a longer
# run is a shorter run).
seq_m = metrics(run / "models/patcher-k4/train/metrics.jsonl")[: len(par_m)]
print("(losses: mean of the last 5 outer steps)")
print("| run | outer steps | s/step (median) | critical path (passes) | retain loss | TR loss | harmful loss end |")
print("|---|---|---|---|---|---|---|")
print(train_row("sequential K=4", seq_m))
print(train_row(f"parallel K=4, P={p}", par_m))

if not (par / f"eval-par{p}/curve.json").exists():
    sys.exit(0)
seq = {0: json.loads((run / "evals/patcher-k4__none.json").read_text())["rows"][0]}
for r in json.loads((run / "evals/patcher-k4__adamw-5e-5.json").read_text())["rows"]:
    seq.setdefault(r["budget"], r)
curve = json.loads((par / f"eval-par{p}/curve.json").read_text())
parr = {p["budget"]: p["report"] for p in curve["points"]}
print()
print("| budget (AdamW 5e-5 steps) | HS sequential | HS parallel | utility sequential | utility parallel |")
print("|---|---|---|---|---|")
for b in sorted(parr):
    s = seq.get(b)
    p = parr[b]
    sh = f"{100 * s['harmful_score']:.0f}%" if s else "-"
    su = f"{100 * s['utility']:.1f}%" if s else "-"
    print(f"| {b} | {sh} | {100 * p['safety']['harmful_score']:.0f}% | {su} | {100 * p['utility']:.1f}% |")
