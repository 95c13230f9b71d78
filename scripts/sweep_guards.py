#!/usr/bin/env python3
"""How a worst-case sweep's verdict depends on its capability guard (docs/results.md §23, §40).

`patcher sweep` reports each defense's worst-case HS over the cells whose held-out benign loss
stays within 1/guard of the defense's unattacked loss (`guard_on = "benign-loss"`). This script
re-reads the cells of one or more finished sweeps (each `DIR/sweep/results.json`, one per
training seed) and prints, per defense:

- the worst-case HS per seed with no guard and with the benign-loss guard at 0.80, 0.85, 0.90
  and 0.95 (a cell is dropped when unattacked loss / attacked loss < guard; "-" when every cell
  is dropped);
- over the cells that break it (HS >= 50%), the range of the benign-loss rise those breaks cost,
  and the cheapest break (the one with the smallest rise) per seed.

Usage: python3 scripts/sweep_guards.py runs/six-defenses runs/six-defenses-s1 runs/six-defenses-s2
"""

import json
import sys
from pathlib import Path

GUARDS = [None, 0.80, 0.85, 0.90, 0.95]


def load(d):
    path = Path(d) / "sweep" / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        sys.exit(f"{path}: not found (has `patcher sweep` finished in {d}?)")


def worst(cells, base_loss, guard):
    """The highest HS among `cells` that pass `guard` (None: every cell), or None if none pass."""
    kept = [c["harmful_score"] for c in cells
            if guard is None or c.get("benign_loss") is None or base_loss / c["benign_loss"] >= guard]
    return max(kept) if kept else None


def pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def main(dirs):
    runs = [load(d) for d in dirs]
    order = [d["defense"] for d in runs[0]["defenses"]]
    print(f"sweeps: {', '.join(dirs)} (commits {', '.join(sorted({r['commit'] for r in runs}))})\n")
    head = ["no guard"] + [f"{g:.2f}" for g in GUARDS[1:]]
    print("| defense | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    breaks = {}
    for name in order:
        cols = [[] for _ in GUARDS]
        rises, cheapest = [], []
        for r in runs:
            d = next((x for x in r["defenses"] if x["defense"] == name), None)
            if d is None:
                for c in cols:
                    c.append("n/a")
                continue
            base = d["unattacked"]["benign_loss"]
            cells = [c for c in r["cells"] if c["defense"] == name]
            for i, g in enumerate(GUARDS):
                cols[i].append(pct(worst(cells, base, g)))
            broken = [(c["benign_loss"] / base - 1, c) for c in cells
                      if c["harmful_score"] >= 0.5 and c.get("benign_loss") is not None]
            rises += [x for x, _ in broken]
            if broken:
                rise, c = min(broken, key=lambda t: t[0])
                cheapest.append(f"{c['optimizer']} {c['mode']} lr {c['lr']:g} {c['steps']} steps: "
                                f"HS {pct(c['harmful_score'])} for {100 * rise:+.0f}%")
            else:
                cheapest.append("no cell breaks it")
        print(f"| {name} | " + " | ".join(" / ".join(c) for c in cols) + " |")
        breaks[name] = (rises, cheapest)
    print("\nBenign-loss rise of the cells that break each defense (HS >= 50%), and the cheapest break per seed:\n")
    for name in order:
        rises, cheapest = breaks[name]
        span = f"{100 * min(rises):+.0f}% to {100 * max(rises):+.0f}% over {len(rises)} cells" if rises else "none"
        print(f"- {name}: {span}; cheapest: " + "; ".join(cheapest))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
