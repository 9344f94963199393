#!/usr/bin/env bash
# Builds the libFuzzer targets of the wire parsers (tests/fuzz/) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer into a build folder of their own, writes their seed corpora, and runs
# each target for a bounded time; fails on the first crash (the input is kept in BUILD/crashes/).
# Usage: scripts/fuzz.sh [--seconds S] [--build DIR] [TARGET...]
#   S: seconds per target (default 20); DIR: default build-fuzz; TARGET: fuzz_sketch fuzz_bundle
#   fuzz_views fuzz_push (default: all). The corpus grows in DIR/corpus/TARGET across runs.
# Exits 77 (ctest: skipped) when clang++ or libFuzzer is missing (Debian: clang-14, libclang-rt-14-dev).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=20 build=$root/build-fuzz targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_sketch fuzz_bundle fuzz_views fuzz_push)

cxx=$(command -v clang++-14 || command -v clang++ || true)
cc=$(command -v clang-14 || command -v clang || true)
[ -n "$cxx" ] && [ -n "$cc" ] || { echo "fuzz: skipped: no clang++ (Debian: clang-14)"; exit 77; }
mkdir -p "$build"
probe=$build/probe.cpp
printf '#include <cstddef>\n#include <cstdint>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' > "$probe"
"$cxx" -fsanitize=fuzzer,address,undefined "$probe" -o "$build/probe" > "$build/probe.log" 2>&1 \
  || { echo "fuzz: skipped: $cxx cannot link -fsanitize=fuzzer (Debian: libclang-rt-14-dev)"; exit 77; }

cmake -S "$root/tests/fuzz" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" > "$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; echo "fuzz: cmake configure failed"; exit 1; }
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" > "$build/build.log" 2>&1 \
  || { tail -50 "$build/build.log"; echo "fuzz: build failed"; exit 1; }
"$build/fuzz_seeds" "$build/seeds"

mkdir -p "$build/crashes" "$build/logs"
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  log=$build/logs/$t.log
  set +e
  "$build/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 -timeout_exitcode=1 \
    -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" "$build/corpus/$t" "$build/seeds/$t" > "$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ $rc = 0 ]; then
    echo "fuzz: $t: ${runs:-?} inputs in ${seconds} s, no crash"
  else
    tail -40 "$log"
    echo "fuzz: $t: FAILED (exit $rc); input in $build/crashes/, log $log"
    failed=1
  fi
done
exit $failed
