#!/usr/bin/env python3
"""What breaking each defense costs in a worst-case sweep (docs/results.md §40).

`patcher sweep` reports each defense's worst-case HS over the cells whose held-out benign loss
stays within 1/guard of the defense's unattacked loss (`guard_on = "benign-loss"`); the worst case
under another guard comes from the same cached cells with
`patcher sweep EXPERIMENT.toml --seeds 0,1,2 --out DIR --set sweep.guard=G` (it rewrites the
summaries; run it again without `--set` to restore them). This script re-reads the cells of one or
more finished sweeps (each `DIR/sweep/results.json`, one per training seed) without touching them
and prints, per defense, over the cells that break it (HS >= 50%): the range of the benign-loss
rise those breaks cost, and the cheapest break (the one with the smallest rise) per seed.

Usage: python3 scripts/sweep_breaks.py runs/six-defenses runs/six-defenses-s1 runs/six-defenses-s2
"""

import json
import sys
from pathlib import Path

def load(d):
    path = Path(d) / "sweep" / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        sys.exit(f"{path}: not found (has `patcher sweep` finished in {d}?)")


def pct(x):
    return f"{100 * x:.0f}%"


def main(dirs):
    runs = [load(d) for d in dirs]
    order = [d["defense"] for d in runs[0]["defenses"]]
    print(f"sweeps: {', '.join(dirs)} (commits {', '.join(sorted({r['commit'] for r in runs}))})\n")
    print("Benign-loss rise of the cells that break each defense (HS >= 50%), and the cheapest break per seed:\n")
    for name in order:
        rises, cheapest = [], []
        for r in runs:
            d = next((x for x in r["defenses"] if x["defense"] == name), None)
            if d is None:
                cheapest.append("not swept")
                continue
            base = d["unattacked"]["benign_loss"]
            broken = [(c["benign_loss"] / base - 1, c) for c in r["cells"]
                      if c["defense"] == name and c["harmful_score"] >= 0.5 and c.get("benign_loss") is not None]
            rises += [x for x, _ in broken]
            if broken:
                rise, c = min(broken, key=lambda t: t[0])
                cheapest.append(f"{c['optimizer']} {c['mode']} lr {c['lr']:g} {c['steps']} steps: "
                                f"HS {pct(c['harmful_score'])} for {100 * rise:+.0f}%")
            else:
                cheapest.append("no cell breaks it")
        span = f"{100 * min(rises):+.0f}% to {100 * max(rises):+.0f}% over {len(rises)} cells" if rises else "none"
        print(f"- {name}: {span}; cheapest: " + "; ".join(cheapest))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
