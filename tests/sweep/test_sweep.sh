#!/usr/bin/env bash
# scripts/sweep.py end to end on a two-run sweep of 20 tiny steps: run (with mpirun), run again
# (finished runs are skipped), a killed run continues from its checkpoint, the table has every
# run and column, the plots are written, bad sweep files are refused with exit 2.
# Usage: test_sweep.sh PARALLAX_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
"$bin" data prepare --input /usr/share/games/fortunes --out "$work/data" --vocab 512 > "$work/prepare.log" 2>&1
cat > "$work/mini.toml" <<TOML
[sweep]
name = "mini"
config = "$src/experiments/tiny.toml"
ranks = 2
seeds = [1, 2]
baseline = "sync"
overrides = ["data.dir=$work/data", "topology.islands=2", "train.steps=20", "train.warmup_steps=2", "data.eval_every=10",
             "data.eval_without_routed=true", "checkpoint.every=10", "log.every=5"]
[[run]]
name = "sync"
overrides = ["train.mode=sync"]
[[run]]
name = "parallax"
overrides = ["train.mode=parallax", "sync.backbone_every=10"]
TOML
sweep() { /usr/bin/python3 "$src/scripts/sweep.py" "$@" --out "$work/out"; }
sweep run "$work/mini.toml" > "$work/run1.log"
[ "$(grep -c ': starting:' "$work/run1.log")" = 4 ] || { echo "FAIL: 4 runs expected"; cat "$work/run1.log"; exit 1; }
sweep run "$work/mini.toml" > "$work/run2.log"
[ "$(grep -c 'done before, skipped' "$work/run2.log")" = 4 ] || { echo "FAIL: finished runs not skipped"; cat "$work/run2.log"; exit 1; }
# a run killed after its checkpoint of step 10: the sweep continues it with --resume
d="$work/out/mini/parallax/seed2"
rm "$d/DONE" "$d/checkpoints/step_00000020.h5"
sweep run "$work/mini.toml" > "$work/run3.log"
grep -q "parallax seed 2: resuming" "$work/run3.log" || { echo "FAIL: no resume"; cat "$work/run3.log"; exit 1; }
grep -q "resumed from .*step 10" "$work/out/mini/parallax/seed2.log" || { echo "FAIL: did not resume from step 10"; exit 1; }
sweep table "$work/mini.toml" > "$work/table.log"
t="$work/out/mini/table.md"
for run in sync parallax; do
  grep -qE "^\| $run \| 2 \| [0-9]+\.[0-9]{4} \| [0-9]+\.[0-9]{4} \|" "$t" || { echo "FAIL: row $run"; cat "$t"; exit 1; }
done
# the assembled model of every run (parallax eval of its last checkpoint, cached beside it)
for run in sync parallax; do
  grep -qE "^\| $run \| 2 \| ([0-9]+\.[0-9]+ \| ){3}[0-9]+\.[0-9]{4} \|" "$t" \
    || { echo "FAIL: no assembled loss in row $run"; cat "$t"; exit 1; }
  [ -s "$work/out/mini/$run/seed1/assembled_eval.json" ] || { echo "FAIL: assembled_eval.json of $run"; exit 1; }
done
# per evaluation: one assembled loss per checkpoint (steps 10 and 20), each a finite number
/usr/bin/python3 - "$work/out/mini/parallax/seed1/assembled_eval.json" <<'PY' || { echo "FAIL: assembled series"; exit 1; }
import json, math, sys
e = json.load(open(sys.argv[1]))["evals"]
assert [x["step"] for x in e] == [10, 20], e
assert all(math.isfinite(x["loss"]) and 2 < x["loss"] < 10 for x in e), e
PY
grep -q "without routed experts" "$t" && grep -q "sketch B/tok" "$t" && grep -q "expert_parallel B/tok" "$t" \
  || { echo "FAIL: columns"; cat "$t"; exit 1; }
for png in loss_vs_tokens loss_vs_bytes bytes_by_tier expert_load; do
  [ -s "$work/out/mini/$png.png" ] || { echo "FAIL: $png.png missing"; exit 1; }
done
[ "$(wc -l < "$work/out/mini/table.csv")" = 3 ] || { echo "FAIL: table.csv rows"; exit 1; }
# a bad sweep file: exit 2 and a message naming the file and the field
printf '[sweep]\nname = "x"\nconfig = "%s/experiments/tiny.toml"\nseeds = []\n[[run]]\nname = "a"\n' "$src" > "$work/bad.toml"
set +e
msg=$(sweep run "$work/bad.toml" 2>&1); rc=$?
set -e
[ $rc = 2 ] && [[ "$msg" == *"bad.toml: [sweep] seeds"* ]] || { echo "FAIL: bad sweep: rc $rc: $msg"; exit 1; }
echo "sweep: run, skip, resume, table, plots, bad input: ok"
cat "$t"
