#!/usr/bin/env bash
# Slurm.TemplatesRunOnALocalSlurm: every template in slurm/ on a real (local) Slurm, started by
# scripts/slurm_local.sh with 2 nodes on this host, in a copy of the repo's layout:
#  - without logs/ a template fails at launch (JobLaunchFailure): the bug logs/.gitignore fixes;
#  - island_per_node.sbatch (2 islands, one per node): USR1 to the batch shell (what
#    --signal=B:USR1@60 sends) -> checkpoint -> requeue -> --resume; then `scontrol requeue`
#    (SIGTERM to the ranks) -> checkpoint -> requeue -> --resume; it finishes all its steps;
#  - syncer_cpu_node.sbatch and parallax_workers.sbatch (heterogeneous jobs) finish;
#  - scripts/sweep.sh slurm --submit runs a 2-task array through sweep_array.sbatch;
#  every run has metrics.h5 (up to the last step) and checkpoints.
# Skips (exit 77) when Slurm or munge is not installed or not root; installs nothing.
# Usage: test_templates.sh PARALLAX_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
for c in slurmctld slurmd sbatch squeue scontrol scancel munged munge mungekey; do
  command -v "$c" > /dev/null || { echo "skip: $c not installed (bash scripts/slurm_local.sh start installs slurm-wlm and munge)"; exit 77; }
done
[[ $(id -u) == 0 ]] || { echo "skip: needs root (munged, slurmd)"; exit 77; }
py=/usr/bin/python3

rm -rf "$work" && mkdir -p "$work"  # (the slurm logs are copied to $work/slurm_log at the end)
# the cluster's state, logs and munge socket under /tmp: the munge user must reach them
SLURM_LOCAL_DIR=$(mktemp -d /tmp/parallax-slurm-test.XXXXXX) && chmod 755 "$SLURM_LOCAL_DIR"
export SLURM_LOCAL_DIR SLURM_LOCAL_NODES=2 SLURM_LOCAL_NO_INSTALL=1 SLURM_LOCAL_LINK_ETC=0
port=7817  # a free slurmctld port, with two free ones after it for the slurmds
while (exec 3<> /dev/tcp/127.0.0.1/$port) 2> /dev/null || (exec 3<> /dev/tcp/127.0.0.1/$((port + 1))) 2> /dev/null \
      || (exec 3<> /dev/tcp/127.0.0.1/$((port + 2))) 2> /dev/null; do port=$((port + 10)); done
export SLURM_LOCAL_PORT=$port SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf
cleanup() {
  bash "$src/scripts/slurm_local.sh" stop > /dev/null 2>&1 || true
  mkdir -p "$work" && cp -r "$SLURM_LOCAL_DIR/log" "$work/slurm_log" 2> /dev/null || true
  rm -rf "$SLURM_LOCAL_DIR"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for f in "$repo"/logs/*.out; do [[ -e $f ]] && { echo "---- $f"; tail -25 "$f"; }; done
  echo "---- slurmctld.log"; tail -15 "$SLURM_LOCAL_DIR/log/slurmctld.log" 2> /dev/null || true
  exit 1
}
job_field() { scontrol show job -o "$1" | grep -o "$2=[^ ]*" | cut -d= -f2 | sort -u | tr '\n' ' ' | sed 's/ $//'; }
wait_jobs() {  # wait_jobs TIMEOUT_S ID...: until none of the jobs is pending or running
  local t=$1; shift
  for _ in $(seq $((t * 2))); do
    local live=0 id
    for id in "$@"; do
      [[ -n $(squeue -h -j "$id" -o %T 2> /dev/null) ]] && live=1
    done
    [[ $live == 0 ]] && return 0
    sleep 0.5
  done
  fail "jobs $* still queued or running after ${t}s: $(squeue -h 2>&1)"
}
wait_log() {  # wait_log TIMEOUT_S FILE REGEX
  for _ in $(seq $(($1 * 2))); do grep -qE "$3" "$2" 2> /dev/null && return 0; sleep 0.5; done
  fail "$2: no line matching '$3' after $1 s"
}
last_step() { $py -c "import h5py,sys; f=h5py.File(sys.argv[1],'r'); s=list(f['/train/step']); print(s[-1] if s == sorted(set(s)) else 'not-increasing')" "$1"; }

# ---- a copy of the repo's layout (templates use paths from the repo root) ---------------
make_tree() {
  mkdir -p "$1/build"
  cp -r "$src/slurm" "$src/experiments" "$src/scripts" "$1/"
  ln -s "$bin" "$1/build/parallax"
  "$bin" data prepare --input /usr/share/games/fortunes --out "$1/data/fortunes-512" --vocab 512 > "$1/prepare.log" 2>&1
}
repo=$work/repo
[[ -f $src/logs/.gitignore ]] || fail "logs/.gitignore is missing: sbatch needs logs/ before a job starts"
if git -C "$src" rev-parse --git-dir > /dev/null 2>&1; then
  git -C "$src" ls-files --error-unmatch logs/.gitignore > /dev/null 2>&1 || fail "logs/.gitignore is not tracked by git"
fi
make_tree "$repo"
mkdir "$repo/logs" && cp "$src/logs/.gitignore" "$repo/logs/"   # what a fresh checkout has
nologs=$work/nologs
mkdir -p "$nologs" && cp -r "$src/slurm" "$nologs/"

bash "$src/scripts/slurm_local.sh" start || fail "the local Slurm did not start"
small="--nodes=1 --ntasks-per-node=1 --cpus-per-task=1"
short="train.steps=40 train.warmup_steps=5 checkpoint.every=20 data.eval_every=20 data.eval_batches=2 log.every=10 sync.backbone_every=10"

# ---- without logs/: the job fails before its script runs -------------------------------------
cd "$nologs"
j0=$(sbatch --parsable $small --gpus-per-node=0 slurm/island_per_node.sbatch)
cd "$repo"
# ---- island_per_node: two islands, USR1 and scontrol requeue ---------------------------------
j1=$(CONFIG=experiments/tiny.toml MODE=diloco RUN_DIR=runs/islands \
     EXTRA_OVERRIDES="train.steps=400 train.warmup_steps=5 checkpoint.every=100000 data.eval_every=200 data.eval_batches=2 log.every=10 sync.backbone_every=10" \
     sbatch --parsable --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --gpus-per-node=0 slurm/island_per_node.sbatch)
# ---- the heterogeneous templates: learners on one node, the syncer / expert worker on another -
j2=$(CONFIG=experiments/tiny.toml RUN_DIR=runs/syncer EXTRA_OVERRIDES="$short" \
     sbatch --parsable $small --gpus-per-node=0 : --nodes=1 --ntasks=1 --cpus-per-task=1 slurm/syncer_cpu_node.sbatch)
j3=$(CONFIG=experiments/tiny.toml RUN_DIR=runs/workers EXTRA_OVERRIDES="$short" \
     sbatch --parsable $small : $small slurm/parallax_workers.sbatch)
# ---- parallax_scale: an island of 2 pipeline stages + a syncer + an expert worker -------------
j5=$(CONFIG=experiments/tiny.toml RUN_DIR=runs/scale RANKS_PER_ISLAND=2 \
     EXTRA_OVERRIDES="$short train.mode=parallax model.n_layers=4 topology.pipeline_stages=2 train.micro_batches=2 sync.backbone_sync=syncer" \
     sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 : $small : $small slurm/parallax_scale.sbatch)
# ---- a sweep array from a sweep file ----------------------------------------------------------
cat > "$work/mini.toml" <<TOML
[sweep]
name = "mini"
config = "experiments/tiny.toml"
ranks = 2
seeds = [1]
overrides = ["topology.islands=2", "train.steps=20", "train.warmup_steps=2", "data.eval_every=10",
             "data.eval_batches=2", "checkpoint.every=10", "log.every=5", "sync.backbone_every=10"]
[[run]]
name = "diloco"
overrides = ["train.mode=diloco"]
[[run]]
name = "parallax"
overrides = ["train.mode=parallax"]
TOML
bash scripts/sweep.sh slurm "$work/mini.toml" --out "$repo/runs/sweeps" --submit --sbatch="--cpus-per-task=1" \
  > "$work/sweep_submit.log" 2>&1 || { cat "$work/sweep_submit.log"; fail "sweep.sh slurm --submit"; }
j4=$(sed -n 's/^submitted array job \([0-9]*\) .*/\1/p' "$work/sweep_submit.log")
[[ -n $j4 ]] || { cat "$work/sweep_submit.log"; fail "no array job id"; }
echo "jobs: no-logs $j0, islands $j1, syncer $j2, workers $j3, sweep array $j4"

# USR1 to the batch shell once it trains, then scontrol requeue once the requeued job trains
log1=$repo/logs/parallax-islands-$j1.out
wait_log 120 "$log1" "step +50/400"
scancel --batch --signal=USR1 "$j1"
wait_log 120 "$log1" "restart 1: .*--resume"
wait_log 60 "$log1" "resumed from .*\(step [0-9]+\)"
n1=$(grep -oE "resumed from .*\(step [0-9]+\)" "$log1" | tail -1 | grep -oE "[0-9]+\)$" | tr -d ')')
wait_log 120 "$log1" "step +$(( (n1 / 10 + 5) * 10 ))/400"
scontrol requeue "$j1"
wait_log 120 "$log1" "restart 2: .*--resume"
wait_jobs 240 "$j0" "$j1" "$j2" "$j3" "$j4" "$j5"

# ---- checks ----------------------------------------------------------------------------------
[[ $(job_field "$j0" JobState) == FAILED && $(job_field "$j0" Reason) == JobLaunchFailure ]] \
  || fail "job $j0 without logs/: $(job_field "$j0" JobState) $(job_field "$j0" Reason), not FAILED JobLaunchFailure"
grep -q "Could not open stdout file $nologs/logs/" "$SLURM_LOCAL_DIR"/log/slurmd-*.log || fail "no 'Could not open stdout file' in the slurmd logs"
echo "ok: without logs/ the job fails at launch (JobLaunchFailure: Could not open stdout file)"

for j in "$j1" "$j2" "$j3" "$j4" "$j5"; do
  [[ $(job_field "$j" JobState) == COMPLETED && $(job_field "$j" ExitCode) == 0:0 ]] \
    || fail "job $j: state $(job_field "$j" JobState), exit $(job_field "$j" ExitCode)"
done
echo "ok: jobs $j1 $j2 $j3 $j4 $j5 (and every component and array task) COMPLETED with exit 0:0"

grep -q "USR1: asking parallax to checkpoint, then requeueing $j1" "$log1" || fail "no USR1 line"
[[ $(job_field "$j1" Restarts) == 2 ]] || fail "job $j1: $(job_field "$j1" Restarts) restarts, 2 expected"
mapfile -t resumed < <(grep -oE "resumed from .*step_[0-9]+\.h5 \(step [0-9]+\)" "$log1")
[[ ${#resumed[@]} == 2 ]] || fail "$log1: ${#resumed[@]} resumes, 2 expected"
for r in "${resumed[@]}"; do
  ck=$(grep -oE "runs/islands/checkpoints/step_[0-9]+\.h5" <<< "$r")
  grep -q "checkpoint $ck" "$log1" || fail "resumed from $ck, which the run did not write"
done
echo "ok: island_per_node: USR1 and scontrol requeue each -> checkpoint -> requeue -> ${resumed[*]}"
[[ $(last_step "$repo/runs/islands/metrics.h5") == 400 ]] || fail "runs/islands/metrics.h5: last step $(last_step "$repo/runs/islands/metrics.h5")"
[[ -f $repo/runs/islands/checkpoints/step_00000400.h5 ]] || fail "runs/islands: no checkpoint of step 400"
grep -q "2 islands x 1 ranks" "$log1" || fail "island_per_node did not run 2 islands"

for d in syncer workers scale; do
  [[ $(last_step "$repo/runs/$d/metrics.h5") == 40 && -f $repo/runs/$d/checkpoints/step_00000040.h5 ]] \
    || fail "runs/$d: metrics.h5 or the checkpoint of step 40 missing"
done
grep -q "1 syncers" "$repo/logs/parallax-syncer-$j2.out" || fail "syncer_cpu_node ran without its syncer"
grep -qE "backbone +[0-9.]+ \| +[1-9]" "$repo/logs/parallax-syncer-$j2.out" || fail "the syncer sent no backbone bytes"
grep -q "1 expert worker" "$repo/logs/parallax-workers-$j3.out" || fail "parallax_workers ran without its worker"
grep -q "1 islands x 2 ranks + 1 syncer(s) + 1 expert worker(s)" "$repo/logs/parallax-scale-$j5.out" || fail "parallax_scale ran another topology"
echo "ok: syncer_cpu_node, parallax_workers and parallax_scale (heterogeneous jobs): 40 steps, metrics.h5, checkpoints"

for run in diloco parallax; do
  d=$repo/runs/sweeps/mini/$run/seed1
  [[ $(last_step "$d/metrics.h5") == 20 && -f $d/checkpoints/step_00000020.h5 ]] || fail "$d: metrics.h5 or checkpoint missing"
done
[[ -s $repo/logs/parallax-sweep-${j4}_0.out && -s $repo/logs/parallax-sweep-${j4}_1.out ]] || fail "array task logs missing"
bash scripts/sweep.sh table "$work/mini.toml" --out "$repo/runs/sweeps" > "$work/table.log" 2>&1 || { cat "$work/table.log"; fail "sweep table"; }
grep -qE "^\| parallax \| 1 \| [0-9]+\.[0-9]{4}" "$repo/runs/sweeps/mini/table.md" || fail "sweep table has no parallax row"
echo "ok: sweep.sh slurm --submit: array $j4 of 2 tasks, metrics.h5 and checkpoints, sweep.sh table"
echo "slurm templates on a local Slurm: ok"
