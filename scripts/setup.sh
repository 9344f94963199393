#!/usr/bin/env bash
# Installs Parallax's build and run dependencies from Debian's packages.
# Idempotent: packages already present are skipped; nothing is installed by hand.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  openmpi-bin libopenmpi-dev
  libhdf5-openmpi-dev hdf5-tools
  libeigen3-dev
  libgtest-dev libbenchmark-dev
  libtomlplusplus-dev libcli11-dev libfmt-dev libspdlog-dev
  fortunes-min fortunes
  python3 python3-numpy python3-h5py python3-matplotlib
  clang-14 libclang-rt-14-dev   # the fuzz targets (scripts/fuzz.sh): clang, libFuzzer, ASan, UBSan
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
