#!/usr/bin/env bash
# How the files in this folder were written: by higgs-lora 0.1.0 (commit 0f51b33, before the package
# restructure of issue 23), with this script, from the repository root. They are kept as written: the test
# (tests/test_saved_files.py) loads them with the current code and compares its predictions with the ones
# 0.1.0 wrote (pred_*.csv), so a change of layout, module path or JSON field that breaks old files fails.
# Do not regenerate them with a newer version; add a new folder for a new format instead.
set -euo pipefail
D=tests/data/saved_v0.1.0
T=$(mktemp -d)
hl() { .venv/bin/higgs-lora "$@"; }
hl simulate --out "$T/sim.csv" --events 6000 --seed 3
head -n 200 "$T/sim.csv" > "$D/rows.csv"
hl train --data "$T/sim.csv" --out "$T/base" --epochs 2 --seed 1 --precision fp32 --no-progress
cp "$T"/base/base.safetensors "$T"/base/base.json "$D/"
for v in lora dora rslora; do
  case $v in lora) opt=();; dora) opt=(--dora);; rslora) opt=(--rslora --lora-init pissa);; esac
  hl finetune "$D/base.safetensors" --data "$T/sim.csv" --out "$T/ft_$v" --ft-epochs 1 --seed 2 --precision fp32 --no-progress "${opt[@]}"
  cp "$T/ft_$v/adapter.safetensors" "$D/adapter_$v.safetensors"; cp "$T/ft_$v/adapter.json" "$D/adapter_$v.json"
done
hl merge "$D/base.safetensors" --adapter "$D/adapter_lora.safetensors" --out "$D/merged.safetensors"
hl export "$D/base.safetensors" --adapter "$D/adapter_lora.safetensors" --format peft --out "$D/peft_lora"
hl shard "$T/sim.csv" --out "$D/shards" --rows-per-shard 2500
hl predict "$D/base.safetensors" --data "$D/rows.csv" --out "$D/pred_base.csv" --precision fp32
for v in lora dora rslora; do
  hl predict "$D/base.safetensors" --adapter "$D/adapter_$v.safetensors" --data "$D/rows.csv" --out "$D/pred_$v.csv" --precision fp32
done
hl predict "$D/merged.safetensors" --data "$D/rows.csv" --out "$D/pred_merged.csv" --precision fp32
rm -rf "$T"
