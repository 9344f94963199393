#!/usr/bin/env bash
# The main job: install dependencies, build, prepare the demo corpus (Debian's fortunes),
# and train experiments/small.toml on one rank. Prints progress and the final validation
# loss, and says where the metrics and checkpoints are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh parallax
DATA=data/fortunes-2048
if [ ! -f "$DATA/val.h5" ]; then
  ./build/parallax data prepare --input /usr/share/games/fortunes --out "$DATA" --vocab 2048
fi
RUN=runs/small-$(date +%Y%m%d-%H%M%S)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
./build/parallax train experiments/small.toml --out "$RUN" "$@"
echo "sample: ./build/parallax sample $RUN/checkpoints/$(ls "$RUN/checkpoints" | tail -n 1) --prompt 'The'"
