#!/usr/bin/env bash
# Damaged checkpoints on --resume (4 ranks, 2 islands x 2): one flipped data byte in rank 2's
# part of the newest checkpoint -> every rank agrees to skip it (a warning) and resume from the
# one before; every checkpoint damaged -> exit 2 with a message, and no file is changed.
# Usage: corrupt_checkpoint.sh PARALLAX_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
source "$(dirname "$0")/fault_setup.sh"  # defines: bin, src, work; prepares $work/data
args=(train "$src/experiments/tiny.toml" --out "$work/run" data.dir="$work/data" topology.islands=2
      topology.ranks_per_island=2 train.mode=diloco sync.backbone_every=5 train.warmup_steps=2
      checkpoint.every=10 checkpoint.keep=0 data.eval_every=10)
mpirun -np 4 --oversubscribe "$bin" "${args[@]}" train.steps=20 > "$work/first.log" 2>&1
flip() {  # file dataset: flips one byte inside the dataset's stored data
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, h5py
path, name = sys.argv[1], sys.argv[2]
with h5py.File(path, "r") as f:
    off = f[name].id.get_offset()
with open(path, "r+b") as f:
    f.seek(off + 100); b = f.read(1); f.seek(off + 100); f.write(bytes([b[0] ^ 0x5A]))
PY
}
ck=$work/run/checkpoints
flip "$ck/step_00000020.h5" rank_00002/params/backbone
set +e
mpirun -np 4 --oversubscribe "$bin" "${args[@]}" train.steps=30 --resume > "$work/resume.log" 2>&1
rc=$?
set -e
[ $rc = 0 ] || { echo "FAIL: resume exit $rc"; cat "$work/resume.log"; exit 1; }
grep -q "skipping .*step_00000020.h5.*rank_00002" "$work/resume.log" || { echo "FAIL: no warning"; cat "$work/resume.log"; exit 1; }
grep -q "resumed from .*step_00000010.h5 (step 10)" "$work/resume.log" || { echo "FAIL: not resumed from step 10"; exit 1; }
echo "damaged newest checkpoint (rank 2's part): skipped, resumed from step 10: ok"
# now every checkpoint is damaged: exit 2, a message, nothing changed
for f in "$ck"/step_*.h5; do flip "$f" rank_00000/params/backbone; done
before=$(cd "$work/run" && find . -type f -newer "$work/first.log" -o -type f | sort | xargs md5sum | md5sum)
set +e
mpirun -np 4 --oversubscribe "$bin" "${args[@]}" train.steps=40 --resume > "$work/none.log" 2>&1
rc=$?
set -e
after=$(cd "$work/run" && find . -type f -newer "$work/first.log" -o -type f | sort | xargs md5sum | md5sum)
grep -q "none of the 3 checkpoints in .* verifies" "$work/none.log" || { echo "FAIL: message"; cat "$work/none.log"; exit 1; }
[ $rc != 0 ] || { echo "FAIL: exit 0 with no readable checkpoint"; exit 1; }
[ "$before" = "$after" ] || { echo "FAIL: files changed"; exit 1; }
echo "no readable checkpoint: exit $rc, message, nothing changed: ok"
