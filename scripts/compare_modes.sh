#!/usr/bin/env bash
# The baseline table of the islands issue: sync vs DiLoCo (H = 50, fp32 and int8) on 4 ranks,
# same data, same tokens. Prints final validation loss and bytes sent per rank per token.
# Usage: bash scripts/compare_modes.sh [extra overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
DATA=data/fortunes-512
[ -f "$DATA/val.h5" ] || ./build/parallax data prepare --input /usr/share/games/fortunes --out "$DATA" --vocab 512
OUT=runs/compare-$(date +%Y%m%d-%H%M%S)
run() {  # name, overrides...
  local name=$1; shift
  mpirun -np 4 --oversubscribe ./build/parallax train experiments/tiny.toml --out "$OUT/$name" \
    data.dir="$DATA" topology.islands=4 "$@" > "$OUT/$name.log" 2>&1
  local loss bpt
  loss=$(grep -o 'final validation loss [0-9.]*' "$OUT/$name.log" | awk '{print $4}')
  bpt=$(tail -n 1 "$OUT/$name/metrics.jsonl" | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["bytes_sent_per_rank_per_token"])')
  printf "| %-22s | %8s | %10s |\n" "$name" "$loss" "$bpt"
}
mkdir -p "$OUT"
echo "| run                    | val loss | bytes/rank/token |"
echo "|---|---|---|"
run sync train.mode=sync "$@"
run diloco-H50-fp32 train.mode=diloco sync.backbone_every=50 "$@"
run diloco-H50-int8 train.mode=diloco sync.backbone_every=50 sync.outer_dtype=int8 "$@"
run diloco-H50-fp4 train.mode=diloco sync.backbone_every=50 sync.outer_dtype=fp4 "$@"
echo "logs and metrics: $OUT"
