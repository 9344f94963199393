#!/usr/bin/env bash
# SIGTERM to mpirun (what scancel and the end of a job's time send): the ranks checkpoint at
# the next step and stop; --resume continues from that checkpoint.
# Usage: sigterm_mpirun.sh PARALLAX_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
source "$(dirname "$0")/fault_setup.sh"  # defines: bin, src, work; prepares $work/data
args=(train "$src/experiments/tiny.toml" --out "$work/run" data.dir="$work/data" topology.islands=2
      train.mode=diloco train.steps=100000 checkpoint.every=0 data.eval_every=0 log.every=20)
mpirun -np 2 --oversubscribe "$bin" "${args[@]}" > "$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "step .*20/" "$work/run.log" 2>/dev/null && break; sleep 0.2; done
kill -TERM "$pid"
wait "$pid" || true
ckpt=$(ls "$work/run/checkpoints" | grep -E '^step_[0-9]{8}\.h5$' | tail -1 || true)
[ -n "$ckpt" ] || { echo "FAIL: no checkpoint after SIGTERM"; cat "$work/run.log"; exit 1; }
step=$((10#${ckpt:5:8}))
echo "checkpoint after SIGTERM: $ckpt (step $step)"
mpirun -np 2 --oversubscribe "$bin" "${args[@]/train.steps=100000/train.steps=$((step + 5))}" --resume \
  > "$work/resume.log" 2>&1 || { echo "FAIL: resume"; cat "$work/resume.log"; exit 1; }
grep -q "resumed from .*step $step" "$work/resume.log" || { echo "FAIL: did not resume from step $step"; exit 1; }
echo "resumed from step $step: ok"
