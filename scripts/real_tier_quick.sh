#!/usr/bin/env bash
# Real tier, reduced for 2 CPU cores: SmolLM2-135M-Instruct as shipped, SFT-aligned, and the
# aligned model after a 100-step full-parameter AdamW attack (lr 5e-5, batch 4 x 128 tokens),
# each evaluated on the real suite (held-out AdvBench + HarmBench prompts, XSTest safe half,
# ARC-Easy, MMLU subset), 100 items per set. Needs ../shared/data. Writes runs/real-quick/; prints wall-clock per stage.
set -euo pipefail
cd "$(dirname "$0")/.."
P=./target/release/patcher
OUT=${OUT:-runs/real-quick}
EVAL="--suite real:100 --max-new-tokens 64 --batch-size 16"
mkdir -p "$OUT"
stage() { local name=$1; shift; local t0=$(date +%s); "$@"; echo "stage $name: $(( $(date +%s) - t0 ))s" | tee -a "$OUT/stages.txt"; }
stage fetch $P fetch smollm2-135m
M=models/smollm2-135m-instruct
stage eval-base $P eval --model $M $EVAL --out "$OUT/eval-base"
stage align $P align --model $M --out "$OUT/sft" --refusals preset:refusals-advbench --refusals preset:refusals-stl \
  --benign preset:benign-alpaca --benign preset:benign-dolly --benign preset:benign-phtest --benign 'preset:benign-lookalike*16' \
  --config configs/align-smollm2-quick.toml
stage eval-sft $P eval --model "$OUT/sft" $EVAL --out "$OUT/eval-sft"
stage attack $P attack --model "$OUT/sft" --preset configs/attack-smollm2-quick.toml --harmful preset:harmful-beavertails \
  --harmful preset:harmful-dna --out "$OUT/sft-attacked"
stage eval-attacked $P eval --model "$OUT/sft-attacked" $EVAL --out "$OUT/eval-sft-attacked"
