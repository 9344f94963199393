#!/usr/bin/env bash
# Runs scripts/sweep.py with Debian's python3 (numpy, h5py and matplotlib come from Debian's
# packages, installed by scripts/setup.sh; another python3 first on PATH may lack them).
# Usage: bash scripts/sweep.sh run|slurm|table experiments/sweeps/NAME.toml [--out DIR]
exec /usr/bin/python3 "$(dirname "$0")/sweep.py" "$@"
