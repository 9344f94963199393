#!/usr/bin/env bash
# The comparison table: sync vs DiLoCo (H = 50, fp32 / int8 / fp4) vs Parallax (homes on the
# learners, or on one extra expert worker), 4 islands of 1 rank, same data, same tokens.
# Prints final validation loss, bytes sent per learner per token (all tiers), and the bytes
# the other ranks (syncers, expert workers) sent per token in all.
# Usage: bash scripts/compare_modes.sh [extra overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
DATA=data/fortunes-512
[ -f "$DATA/val.h5" ] || ./build/parallax data prepare --input /usr/share/games/fortunes --out "$DATA" --vocab 512
OUT=${COMPARE_OUT:-runs/compare-$(date +%Y%m%d-%H%M%S)}
run() {  # name, ranks, overrides...
  local name=$1 np=$2; shift 2
  mpirun -np "$np" --oversubscribe ./build/parallax train experiments/tiny.toml --out "$OUT/$name" \
    data.dir="$DATA" topology.islands=4 "$@" > "$OUT/$name.log" 2>&1
  local loss bytes
  loss=$(grep -o 'final validation loss [0-9.]*' "$OUT/$name.log" | awk '{print $4}')
  # the run's closing table: "<tier>  <mean per learner> | <other ranks>" bytes per token
  bytes=$(sed -n '/bytes sent per token, by tier/,/done:/p' "$OUT/$name.log" | grep '|' | grep -v -e 'by tier' -e 'done:' |
          awk -F'|' '{n = split($1, a, " "); l += a[n]; o += $2} END {printf "%.2f %.2f", l, o}')
  printf "| %-22s | %8s | %10s | %10s |\n" "$name" "$loss" "${bytes% *}" "${bytes#* }"
}
mkdir -p "$OUT"
echo "| run                    | val loss | bytes/learner/token | others' bytes/token |"
echo "|---|---|---|---|"
run sync 4 train.mode=sync "$@"
run diloco-H50-fp32 4 train.mode=diloco sync.backbone_every=50 "$@"
run diloco-H50-int8 4 train.mode=diloco sync.backbone_every=50 sync.outer_dtype=int8 "$@"
run diloco-H50-fp4 4 train.mode=diloco sync.backbone_every=50 sync.outer_dtype=fp4 "$@"
run parallax-H50-int8 4 train.mode=parallax sync.backbone_every=50 sync.outer_dtype=int8 "$@"
run parallax-H50-int8-fp8sk 4 train.mode=parallax sync.backbone_every=50 sync.outer_dtype=int8 sketch.dtype=fp8 sketch.tokens=16 "$@"
run parallax-worker-H50 5 train.mode=parallax topology.expert_workers=1 sync.backbone_every=50 sync.outer_dtype=int8 "$@"
run parallax-adapters-r4 4 train.mode=parallax sync.backbone_every=50 sync.outer_dtype=int8 experts.signal=adapters experts.adapter_rank=4 experts.adapter_every=10 experts.snapshot_every=10 "$@"
run parallax-lowrank16 4 train.mode=parallax sync.backbone_every=50 sync.outer_dtype=int8 experts.view=lowrank experts.surrogate_rank=16 experts.surrogate_every=10 "$@"
run parallax-nondet 4 train.mode=parallax sync.backbone_every=50 sync.outer_dtype=int8 train.deterministic=false "$@"
echo "logs and metrics: $OUT"
