#!/usr/bin/env bash
# Packs what a GPU machine without MPI/HDF5 packages needs to run the CUDA tests, the CUDA
# benchmarks and `parallax train train.device=cuda` into .gpu/ (git-ignored): binaries built
# for one architecture, the non-system shared libraries they use (not cuBLAS: the GPU
# machine has its own), Open MPI's and PMIx's plugins, and a prepared demo corpus.
# Usage: bash scripts/device_bundle.sh [ARCH, default 90]; then on the GPU machine:
#   cd .gpu && source env.sh && ./parallax_cuda_tests && ./parallax train ...
# (carry .gpu.tar.xz when .gpu/ is over the device tool's 64 MiB: device_check.sh unpacks it)
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:-90}
cmake -S . -B build$ARCH -DPARALLAX_CUDA=ON -DPARALLAX_CUDA_ARCHS=$ARCH -DCMAKE_BUILD_TYPE=Release > /dev/null
# the device tool carries at most 64 MiB: benchmarks only with BENCH=1
targets="parallax parallax_cuda_tests mpi_gpu"
[ "${BENCH:-0}" = 1 ] && targets="$targets bench_cuda bench_cuda_step"
cmake --build build$ARCH -j "$(nproc)" --target $targets
rm -rf .gpu && mkdir -p .gpu/lib
cp build$ARCH/parallax build$ARCH/tests/parallax_cuda_tests build$ARCH/tests/mpi_gpu .gpu/
[ "${BENCH:-0}" = 1 ] && cp build$ARCH/bench/bench_cuda build$ARCH/bench/bench_cuda_step .gpu/
strip .gpu/parallax .gpu/parallax_cuda_tests .gpu/mpi_gpu .gpu/bench_cuda* 2>/dev/null || true
copy_libs() {  # binaries...: the non-system shared libraries they load, into .gpu/lib
  ldd "$@" 2>/dev/null | awk '/=>/{print $3}' | sort -u |
    grep -vE 'libc\.so|libm\.so|libstdc\+\+|libgcc_s|libpthread|libdl\.|librt\.|ld-linux|cublas|libcuda\.|libnccl' |
    xargs -r -I{} cp -Ln {} .gpu/lib/
}
copy_libs build$ARCH/parallax build$ARCH/tests/parallax_cuda_tests
cp -r /usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 .gpu/openmpi3
cp -r /usr/lib/x86_64-linux-gnu/pmix2/lib/pmix .gpu/pmix 2>/dev/null || true
# the launcher too (the GPU image has no Open MPI of its own: mpi_gpu and the multi-rank runs
# need mpirun), with its help texts (OPAL_PREFIX below), and what the launcher and the MCA
# plugins load (libpmix, libmca_common_*, ...), so that nothing comes from a system Open MPI
mkdir -p .gpu/bin .gpu/share
cp -L "$(readlink -f "$(command -v mpirun)")" .gpu/bin/mpirun
cp -L "$(command -v orted)" .gpu/bin/orted
cp -r /usr/share/openmpi .gpu/share/openmpi
[ -d /usr/lib/x86_64-linux-gnu/pmix2/share/pmix ] && cp -r /usr/lib/x86_64-linux-gnu/pmix2/share/pmix .gpu/share/pmix
copy_libs .gpu/bin/mpirun .gpu/bin/orted .gpu/openmpi3/*.so .gpu/pmix/*.so
[ -f data/fortunes-2048/val.h5 ] || ./build$ARCH/parallax data prepare --input /usr/share/games/fortunes --out data/fortunes-2048 --vocab 2048
mkdir -p .gpu/data && cp -r data/fortunes-2048 .gpu/data/
cp experiments/small.toml .gpu/
# the multi-rank GPU test (mpi_gpu) away from its build: tiny.toml and the raw corpus
mkdir -p .gpu/experiments && cp experiments/tiny.toml .gpu/experiments/
cp -r /usr/share/games/fortunes .gpu/data/fortunes-raw
cat > .gpu/env.sh <<'ENV'
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH=$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=$here/bin:$PATH OPAL_PREFIX=$here
export OMPI_MCA_mca_base_component_path=$here/openmpi3 PMIX_MCA_mca_base_component_path=$here/pmix
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=4
export PX_TEST_SOURCE_DIR=$here PX_TEST_BINARY_DIR=$here PX_TEST_FORTUNES=$here/data/fortunes-raw
# NCCL (loaded at run time, not carried: 200 MB): the image's pip wheel, where it has one
nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null) &&
  [ -d "$nccl" ] && export LD_LIBRARY_PATH=$nccl:$LD_LIBRARY_PATH
ENV
du -sh .gpu
# the device tool carries at most 64 MiB: the bundle also as one xz tarball (binaries compress
# about 4x), which scripts/device_check.sh unpacks when .gpu/ itself was not carried
tar -C . -cJf .gpu.tar.xz .gpu
du -sh .gpu.tar.xz
