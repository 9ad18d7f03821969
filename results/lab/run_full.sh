#!/usr/bin/env bash
# Regenerates results/lab/full (the lab chapter's results) from scratch, pair included: every
# claim's arms with the `full` preset, two runs at a time on one CPU thread each, then the probes
# (probes.json). Finished runs are skipped and interrupted ones resume, so re-running completes an
# interrupted set; pass --fresh to delete results/lab/full first. Writes the wall time of this
# invocation and the machine's load to results/lab/full/TIMING. The TRL comparison
# (results/lab/lab_vs_trl.json) is separate: benchmarks/lab_vs_trl.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
if [[ "${1:-}" == "--fresh" ]]; then rm -rf results/lab/full; fi
cached=0  # pair stages already prepared at the start
for f in results/lab/full/cache/*.pt; do [[ -e "$f" ]] && cached=$((cached + 1)); done
load=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s)
OMP_NUM_THREADS=1 $PY -m opd_lib.lab experiments --preset full --out results/lab/full \
  --seeds 0 1 2 --jobs 2 --no-progress
end=$(date +%s)
printf 'experiments: %d s wall on %s CPU cores (load average %s at the start, %s at the end), %s cached pair stages at the start (%s)\n' \
  "$((end - start))" "$(nproc)" "$load" "$(cut -d' ' -f1 /proc/loadavg)" "$cached" \
  "$(date -u +%Y-%m-%d)" > results/lab/full/TIMING
cat results/lab/full/TIMING
