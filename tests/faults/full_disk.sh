#!/usr/bin/env bash
# A full disk at a checkpoint (2 ranks, 2 islands, diloco). The ranks run under a file-size limit
# (`ulimit -f`, SIGXFSZ ignored, so that a write past it fails as on a full disk) that the metrics
# fit under and a checkpoint does not; the shared-memory transport is off (its backing files are
# over the limit too). At the first checkpoint: exit 2 on every rank, no hang, one message naming
# the file and the limit, no .tmp left, metrics.h5 readable. With an earlier complete checkpoint,
# the next one fails the same way, the earlier one stays readable, and --resume continues from it
# once there is room.
# Usage: full_disk.sh PARALLAX_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
source "$(dirname "$0")/fault_setup.sh"  # defines: bin, src, work; prepares $work/data
limit_kb=4096  # metrics.h5 holds about 1.4 MB here, a checkpoint about 11 MB
args=(train "$src/experiments/tiny.toml" data.dir="$work/data" topology.islands=2 train.mode=diloco
      train.warmup_steps=2 checkpoint.every=10 checkpoint.keep=0 data.eval_every=10)
run() {  # run LIMITED LOG ARGS...: 2 ranks, under the file-size limit when LIMITED = 1; sets rc
  local limited=$1 log=$2
  shift 2
  local wrap=(bash -c "exec \"\$0\" \"\$@\"")
  [ "$limited" = 1 ] && wrap=(bash -c "trap '' XFSZ; ulimit -f $limit_kb; exec \"\$0\" \"\$@\"")
  set +e
  timeout -k 5 90 mpirun -np 2 --oversubscribe --mca btl self,tcp "${wrap[@]}" "$bin" "${args[@]}" "$@" > "$log" 2>&1
  rc=$?
  set -e
}
readable() {  # readable METRICS_H5: every dataset reads back
  /usr/bin/python3 - "$1" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    for n in names: f[n][()]
    assert "train/loss" in names, names
PY
}
refused() {  # refused LOG CKPT_DIR STEP: the checkpoint of STEP failed cleanly
  local log=$1 ck=$2 step=$3
  [ $rc != 124 ] && [ $rc != 137 ] || { echo "FAIL: the ranks hang (timeout)"; cat "$log"; exit 1; }
  [ $rc != 0 ] || { echo "FAIL: exit 0 without the checkpoint"; cat "$log"; exit 1; }
  ! grep -qiE "segmentation fault|exited on signal|internal error" "$log" || { echo "FAIL: a crash"; cat "$log"; exit 1; }
  grep -q "error: checkpoint .*step_$(printf %08d "$step").h5 not written.*file-size limit" "$log" \
    || { echo "FAIL: no message naming the file and the limit"; cat "$log"; exit 1; }
  [ -z "$(ls "$ck" | grep -E "\.tmp$|step_$(printf %08d "$step")" || true)" ] \
    || { echo "FAIL: files left: $(ls "$ck")"; exit 1; }
}

# the first checkpoint of a run
run 1 "$work/first.log" --out "$work/first" train.steps=20
refused "$work/first.log" "$work/first/checkpoints" 10
readable "$work/first/metrics.h5" || { echo "FAIL: metrics.h5 unreadable"; exit 1; }
echo "full disk at the first checkpoint: exit $rc on every rank, message, no .tmp, metrics readable: ok"

# a later checkpoint: the earlier one stays, and --resume continues from it once there is room
run 0 "$work/ok.log" --out "$work/run" train.steps=10
[ $rc = 0 ] || { echo "FAIL: the run without a limit"; cat "$work/ok.log"; exit 1; }
run 1 "$work/later.log" --out "$work/run" train.steps=30 --resume
refused "$work/later.log" "$work/run/checkpoints" 20
readable "$work/run/metrics.h5" || { echo "FAIL: metrics.h5 unreadable"; exit 1; }
run 0 "$work/resume.log" --out "$work/run" train.steps=30 --resume
[ $rc = 0 ] || { echo "FAIL: resume once there is room"; cat "$work/resume.log"; exit 1; }
grep -q "resumed from .*step_00000010.h5 (step 10)" "$work/resume.log" || { echo "FAIL: not resumed from step 10"; exit 1; }
[ -f "$work/run/checkpoints/step_00000030.h5" ] || { echo "FAIL: no checkpoint at step 30"; exit 1; }
echo "full disk at a later checkpoint: step 10 kept, resumed from it with room, step 30 written: ok"
