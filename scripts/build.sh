#!/usr/bin/env bash
# Configures and builds Parallax into build/ (Release). Extra arguments are make targets.
# PARALLAX_CUDA=ON|OFF|AUTO (default AUTO: the CUDA backend is built when nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPARALLAX_CUDA="${PARALLAX_CUDA:-AUTO}" > build.log 2>&1 \
  || { cat build.log; echo "build: cmake configure failed (log above)"; exit 1; }
jobs=$(nproc 2>/dev/null || echo 2)
cmake --build build -j "$jobs" ${1:+--target "$@"}
