#!/usr/bin/env bash
# A rank that stops answering (SIGSTOP: a hung node) must not hang the job: with
# sync.timeout_s = 4 the ranks waiting for it end with a message naming the call, the
# communicator and what they waited for, and mpirun exits non-zero within seconds.
# Usage: wait_deadline.sh PARALLAX_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
source "$(dirname "$0")/fault_setup.sh"  # defines: bin, src, work; prepares $work/data
args=(train "$src/experiments/tiny.toml" --out "$work/run" data.dir="$work/data" topology.islands=2
      topology.syncers=1 sync.backbone_sync=syncer sync.backbone_every=5 train.mode=diloco
      train.steps=100000 checkpoint.every=0 data.eval_every=0 log.every=5 sync.timeout_s=4)
mpirun -np 3 --oversubscribe "$bin" "${args[@]}" > "$work/run.log" 2>&1 &
job=$!
for _ in $(seq 300); do grep -q "step .*10/" "$work/run.log" 2>/dev/null && break; sleep 0.2; done
grep -q "step .*10/" "$work/run.log" || { echo "FAIL: the run did not start"; cat "$work/run.log"; exit 1; }
# island 1's learner (world rank 1) stops answering
victim=""
for p in $(pgrep -f -- "--out $work/run"); do
  if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1; then victim=$p; fi
done
[ -n "$victim" ] || { echo "FAIL: no process of rank 1"; exit 1; }
kill -STOP "$victim"
t0=$(date +%s)
rc=0
for _ in $(seq 600); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$job" 2>/dev/null; then
  kill -CONT "$victim"; kill -KILL "$job"
  echo "FAIL: the job still hangs 60 s after rank 1 stopped answering"; tail -5 "$work/run.log"; exit 1
fi
wait "$job" || rc=$?
elapsed=$(( $(date +%s) - t0 ))
kill -KILL "$victim" 2>/dev/null || true
echo "mpirun exited $rc, ${elapsed} s after rank 1 stopped"
[ "$rc" -ne 0 ] || { echo "FAIL: exit code 0"; exit 1; }
grep -E "parallax: rank [0-9] waited [0-9.]+ s \(sync.timeout_s = 4\) in MPI_" "$work/run.log" \
  || { echo "FAIL: no deadline message"; tail -20 "$work/run.log"; exit 1; }
echo "ok"
