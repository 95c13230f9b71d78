#!/usr/bin/env python3
"""Print a markdown table (`*` marks held-out attacks) of harmful score (HS) by defense, attack and budget from a run
directory written by `patcher run` (reads RUN/evals/*.json, so it works on unfinished runs)."""
import glob, json, sys, os

run = sys.argv[1]
rows = []
for f in sorted(glob.glob(os.path.join(run, "evals", "*.json"))):
    rows += json.load(open(f))["rows"]
attacks = []
for r in rows:
    if r["attack"] != "none" and (r["attack"], r["held_out"]) not in attacks:
        attacks.append((r["attack"], r["held_out"]))
defenses = []
for r in rows:
    if r["defense"] not in defenses:
        defenses.append(r["defense"])
budgets = {a: sorted({r["budget"] for r in rows if r["attack"] == a and r["budget"] > 0}) for a, _ in attacks}
cols = [(a, h, b) for a, h in attacks for b in budgets[a]]
print("| defense | HS | utility | over-refusal | " + " | ".join(
    f"{a}{'*' if h else ''} @{b}" for a, h, b in cols) + " |")
print("|" + "---|" * (4 + len(cols)))
for d in defenses:
    u = next((r for r in rows if r["defense"] == d and r["attack"] == "none"), None)
    cells = [d, f"{100*u['harmful_score']:.0f}%" if u else "", f"{100*u['utility']:.0f}%" if u else "",
             f"{100*u['over_refusal']:.0f}%" if u and u.get("over_refusal") is not None else ""]
    for a, _, b in cols:
            r = next((r for r in rows if r["defense"] == d and r["attack"] == a and r["budget"] == b), None)
            cells.append(f"{100*r['harmful_score']:.0f}%" if r else "-")
    print("| " + " | ".join(cells) + " |")
