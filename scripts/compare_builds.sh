#!/usr/bin/env bash
# Behaviour check of a refactor: runs the same training runs with two builds (two worktrees,
# each already built into its build/) and diffs their metrics bit for bit.
#   runs: every row of scripts/compare_modes.sh (fewer steps by default) and the run folders
#   the multi-rank tests leave under build/test_tmp (resume, re-homing, syncer, fragments,
#   hierarchical, adapters, low-rank views, expert workers).
#   compared: /train/loss, /eval/loss and every /comm/<tier>/bytes of each metrics.h5, printed
#   by h5dump with full precision (times, throughput and memory differ between any two runs).
# Usage: bash scripts/compare_builds.sh OLD_TREE NEW_TREE [steps]
# Non-deterministic runs (train.deterministic = false) are listed but not expected to match.
# COMPARE_DIR=DIR keeps the runs there, and a tree whose runs are already there (DIR/old/.done,
# DIR/new/.done) is not run again: run the old tree once, then compare new builds against it.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_TREE NEW_TREE [steps]" >&2; exit 2; }
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd); STEPS=${3:-100}
HERE=$(cd "$(dirname "$0")" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
OUT=${COMPARE_DIR:-$(mktemp -d /tmp/compare_builds.XXXXXX)}
mkdir -p "$OUT"

for tree in "$OLD" "$NEW"; do
  for f in parallax tests/mpi_train tests/mpi_parallax; do
    [ -x "$tree/build/$f" ] || { echo "$tree/build/$f: not built (run scripts/build.sh there)" >&2; exit 2; }
  done
done

dump() {  # run folder -> the compared datasets as text
  local h5=$1/metrics.h5 d
  [ -f "$h5" ] || return 0
  for d in $(h5ls -r "$h5" | awk '$1 == "/train/loss" || $1 == "/eval/loss" || $1 ~ /^\/comm\/.*\/bytes$/ {print $1}'); do
    echo "== $d"
    h5dump -m %.17g -d "$d" -y -w 0 "$h5" | sed -n '/DATA {/,/}/p'
  done
}

run_tree() {  # tree label
  local tree=$1 label=$2
  local dest=$OUT/$label
  if [ -f "$dest/.done" ]; then echo "[$label] runs kept from before in $dest"; return 0; fi
  rm -rf "$dest"; mkdir -p "$dest"
  echo "[$label] compare_modes rows ($STEPS steps) in $tree"
  cp "$HERE/compare_modes.sh" "$tree/scripts/.compare_modes_cmp.sh"
  (cd "$tree" && COMPARE_OUT="$dest/modes" bash scripts/.compare_modes_cmp.sh train.steps="$STEPS" \
     checkpoint.every=50 > "$dest/modes.txt")
  rm -f "$tree/scripts/.compare_modes_cmp.sh"
  echo "[$label] multi-rank tests in $tree"
  rm -rf "$tree/build/test_tmp"
  for t in mpi_train mpi_parallax; do
    (cd "$tree/build/tests" && PX_MPI_TEST_TIMEOUT=600 mpirun -np 5 --oversubscribe "./$t" > "$dest/$t.log" 2>&1) \
      || { echo "[$label] $t failed: $dest/$t.log" >&2; exit 1; }
  done
  mkdir -p "$dest/tests"
  for d in "$tree"/build/test_tmp/*/; do
    local name
    name=$(basename "$d" | sed 's/_[0-9]*$//')
    [ -d "$d/checkpoints" ] || [ -f "$d/metrics.h5" ] || continue
    mv "$d" "$dest/tests/$name"
  done
  for d in "$dest"/modes/*/ "$dest"/tests/*/; do
    [ -f "$d/metrics.h5" ] || continue
    dump "$d" > "$d/compared.txt"
  done
  touch "$dest/.done"
}

run_tree "$OLD" old
run_tree "$NEW" new

same=0; differ=0
printf "| %-34s | %s |\n" run "metrics (loss, eval, comm bytes)"
echo "|---|---|"
for d in "$OUT"/old/modes/*/ "$OUT"/old/tests/*/; do
  rel=${d#"$OUT"/old/}; rel=${rel%/}
  [ -f "$d/compared.txt" ] || continue
  other=$OUT/new/$rel/compared.txt
  note=""
  case $rel in *nondet*|*NonDet*|*async*|*px_nd*) note=" (non-deterministic by design)";; esac
  if [ -f "$other" ] && cmp -s "$d/compared.txt" "$other"; then
    printf "| %-34s | bit-identical |\n" "$rel"; same=$((same + 1))
  else
    # which datasets differ
    which=$(diff <(awk '/^== /{d=$2} {print d": "$0}' "$d/compared.txt") \
                 <(awk '/^== /{d=$2} {print d": "$0}' "$other" 2>/dev/null) 2>/dev/null |
            sed -n 's/^[<>] \([^:]*\):.*/\1/p' | sort -u | tr '\n' ' ' || true)
    printf "| %-34s | DIFFERENT%s: %s|\n" "$rel" "$note" "$which"; differ=$((differ + 1))
  fi
done
echo "$same bit-identical, $differ different; dumps in $OUT/{old,new}"
