#!/usr/bin/env bash
# Regenerates results/lab (the lab chapter's results): every claim's arms for three seeds with the
# `full` preset, two runs at a time on one CPU thread each, then the TRL comparison. Finished runs
# are skipped and interrupted ones resume, so re-running completes an interrupted set. Writes the
# wall time of this invocation to results/lab/full/TIMING.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
cached=0  # pair stages already prepared (the current cache key's file need not be among them)
for stage in teacher-clean teacher student; do
  ls results/lab/full/cache/"$stage"-*.pt >/dev/null 2>&1 && cached=$((cached + 1))
done
start=$(date +%s)
$PY -m opd_lib.lab experiments --preset full --out results/lab/full --seeds 0 1 2 --jobs 2 \
  --no-progress
end=$(date +%s)
printf 'experiments: %d s wall on %s CPU cores, %s of 3 pair stages cached at the start (%s)\n' \
  "$((end - start))" "$(nproc)" "$cached" "$(date -u +%Y-%m-%d)" > results/lab/full/TIMING
$PY benchmarks/lab_vs_trl.py --seeds 0 1 2 --out results/lab/lab_vs_trl.json
