#!/usr/bin/env bash
# Runs the expert-path and plain-GEMM benchmarks in one process and prints their GFLOP/s
# and the ratio expert-path / plain-GEMM (the foundation issue asks for >= 0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bench/bench_expert_path
[ -x "$bin" ] || bash scripts/build.sh bench_expert_path
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
"$bin" --benchmark_repetitions="${REPS:-3}" --benchmark_report_aggregates_only=true \
  --benchmark_format=json > /tmp/px_bench_expert.json
python3 - /tmp/px_bench_expert.json <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["benchmarks"]
med = {r["run_name"].split("/")[0]: r["GFLOP/s"] / 1e9 if r["GFLOP/s"] > 1e6 else r["GFLOP/s"]
       for r in runs if r.get("aggregate_name") == "median"}
e, g = med["BM_ExpertPathFwdBwd"], med["BM_PlainGemmSameFlops"]
print(f"expert path fwd+bwd : {e:8.1f} GFLOP/s (median)")
print(f"plain GEMM same FLOP: {g:8.1f} GFLOP/s (median)")
print(f"ratio expert/GEMM   : {e / g:8.3f}")
PY
