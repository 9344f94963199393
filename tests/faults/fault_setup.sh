# Sourced by the fault tests (tests/faults/*.sh) after `set -euo pipefail`, with the test's
# arguments PARALLAX_BINARY SOURCE_DIR WORK_DIR: sets bin, src, work and the MPI environment,
# and prepares the demo corpus in $work/data.
bin=$1 src=$2 work=$3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
rm -rf "$work" && mkdir -p "$work"
"$bin" data prepare --input /usr/share/games/fortunes --out "$work/data" --vocab 512 > "$work/prepare.log" 2>&1
