#!/usr/bin/env bash
# `parallax plan` = measurement: every rank of the small configs of scripts/plan_vs_measured.py
# (sync 1 and 2 ranks, micro-batches, diloco with islands, D = 2 and a syncer, parallax with and
# without an expert worker, full views, pipeline stages with D = 1 and 2 and ZeRO-1)
# peaks within 15% of the plan's memory for its role
# (the C++ heap, counted by the replaced operator new). Prints the table.
# Usage: test_plan_vs_measured.sh PARALLAX_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
"$bin" data prepare --input /usr/share/games/fortunes --out "$work/data" --vocab 512 > "$work/prepare.log" 2>&1
OMP_NUM_THREADS=1 /usr/bin/python3 "$src/scripts/plan_vs_measured.py" --build "$(dirname "$bin")" \
  --data "$work/data" --out "$work/runs" --tolerance 0.15
