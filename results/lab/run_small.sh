#!/usr/bin/env bash
# Regenerates results/lab (the chapter-10 tables and figures) with the `small` preset on one CPU
# thread: a cached teacher/student pair, then off-policy SFT, on-policy OPD and GRPO, two seeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
$PY -m opd_lib.lab pair --preset small --out results/lab/cache --no-progress
for seed in ${SEEDS:-0 1}; do
  for method in sft opd rl; do
    $PY -m opd_lib.lab train --method "$method" --preset small --seed "$seed" \
      --cache-dir results/lab/cache --out "results/lab/runs/$method-s$seed" --no-progress
  done
done
rm -f results/lab/runs/*/ckpt.pt
$PY -m opd_lib.lab report results/lab/runs --out results/lab
