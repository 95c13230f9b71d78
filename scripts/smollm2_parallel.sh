#!/usr/bin/env bash
# Real tier of issue 6: parallel Patcher (P = PAR workers, default 2) on SmolLM2-135M against its sequential
# counterpart, the `patcher-k4` defense of `patcher run configs/smollm2-quick.toml` (same
# starting SFT model, same config: configs/patcher-smollm2-quick.toml, K = 4), for the first
# STEPS outer steps (default 10 of the sequential run's 20; the schedules are constant, so the
# first 10 steps of a 20-step run are a 10-step run). Compares wall-clock per outer step, the
# critical path and the losses. With EVAL=1 the parallel model is also attacked like the
# experiment's models (AdamW 5e-5, batch 4 x 128, budgets 0/25/50) on the same suite (real:50).
# Needs the quick experiment's run directory and ../shared/data. Prints wall-clock per stage.
set -euo pipefail
cd "$(dirname "$0")/.."
P=./target/release/patcher
RUN=${RUN:-runs/smollm2-quick}
OUT=${OUT:-runs/smollm2-parallel}
STEPS=${STEPS:-10}
# Workers. Each holds an offset, an AdamW state and its own gradients (about 4-5 GB at this
# shape): P = 4 needs about 20 GB, P = 2 about 10 GB.
PAR=${PAR:-2}
mkdir -p "$OUT"
sed "s/^outer_steps = .*/outer_steps = $STEPS/" configs/patcher-smollm2-quick.toml > "$OUT/patcher.toml"
stage() { local name=$1; shift; local t0=$(date +%s); "$@"; echo "stage $name: $(( $(date +%s) - t0 ))s" | tee -a "$OUT/stages.txt"; }
stage harden-par$PAR /usr/bin/time -v $P harden --model "$RUN/models/sft" --config "$OUT/patcher.toml" --parallel $PAR \
  --out "$OUT/patcher-k4-par$PAR" --refusals preset:refusals-advbench --refusals preset:refusals-stl \
  --benign preset:benign-alpaca --benign preset:benign-dolly --benign preset:benign-phtest --benign 'preset:benign-lookalike*16' \
  --harmful preset:harmful-advbench --harmful preset:harmful-jbb
[ "${EVAL:-0}" = 1 ] && stage curve $P eval --model "$OUT/patcher-k4-par$PAR" --suite real:50 --limit 50 --max-new-tokens 64 --batch-size 16 \
  --attack configs/attack-smollm2-quick.toml --budgets 0,25,50 \
  --harmful preset:harmful-beavertails --harmful preset:harmful-dna --out "$OUT/eval-par$PAR"
python3 scripts/compare_parallel.py "$RUN" "$OUT" "$PAR"
