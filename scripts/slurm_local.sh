#!/usr/bin/env bash
# A one-machine Slurm (Debian 12, as root), to try the sbatch templates in slurm/ for real:
# this host is the controller and the compute node, with partitions debug (default), cpu and
# gpu (the names the templates ask for) all holding it. SLURM_LOCAL_NODES=N (default 1) makes
# it N compute nodes px1..pxN, one slurmd each on this host (ports after slurmctld's), each
# with all the CPUs: multi-node jobs (one island per node) and heterogeneous jobs (whose
# components the backfill scheduler never puts on one node) then run here too.
#
#   bash scripts/slurm_local.sh start     # installs slurm-wlm + munge if missing, starts
#                                         # munged, slurmctld, slurmd(s); waits for the nodes
#   bash scripts/slurm_local.sh status    # daemons and sinfo
#   bash scripts/slurm_local.sh stop      # stops the daemons it started, removes its config
#
# State, config and logs live in SLURM_LOCAL_DIR (default /tmp/parallax-slurm); every start
# is a fresh cluster (no jobs of an earlier one). The config is
# $SLURM_LOCAL_DIR/slurm.conf; `start` links /etc/slurm/slurm.conf to it when that file does
# not exist (so plain sbatch/squeue find it; SLURM_LOCAL_LINK_ETC=0: never) and `stop` removes
# only that link. Otherwise export SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf. `stop` cancels the
# jobs still queued or running first.
# Environment: SLURM_LOCAL_CPUS (CPUs per node, default: nproc), SLURM_LOCAL_NODES,
# SLURM_LOCAL_PORT (slurmctld's, default 6817; the slurmds take the next ones),
# SLURM_LOCAL_NO_INSTALL=1 (fail instead of running apt-get).
# No cgroups: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none (containers lack them).
# munged is the cluster's own too (its key and socket in $SLURM_LOCAL_DIR/munge).
set -euo pipefail

dir=${SLURM_LOCAL_DIR:-/tmp/parallax-slurm}
conf=$dir/slurm.conf
host=$(hostname -s)
cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
port=${SLURM_LOCAL_PORT:-6817}
nodes=${SLURM_LOCAL_NODES:-1}
[[ $nodes =~ ^[1-9][0-9]?$ ]] || { echo "slurm_local: error: SLURM_LOCAL_NODES=$nodes: 1..99" >&2; exit 2; }
if [[ $nodes == 1 ]]; then names=("$host"); else names=($(seq -f "px%g" 1 "$nodes")); fi
etc_conf=/etc/slurm/slurm.conf
socket=$dir/munge/munge.socket.2

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

install_packages() {
  if command -v slurmctld > /dev/null && command -v slurmd > /dev/null && command -v sbatch > /dev/null \
     && command -v munged > /dev/null; then
    return
  fi
  [[ ${SLURM_LOCAL_NO_INSTALL:-0} == 1 ]] && die "slurm packages not installed (SLURM_LOCAL_NO_INSTALL=1)"
  [[ $(id -u) == 0 ]] || die "installing packages needs root"
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update > "$dir/apt.log" 2>&1 || { cat "$dir/apt.log"; die "apt-get update failed"; }
  # policy-rc.d 101: the packages' postinst must not start the system services (we start ours)
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [[ -e $policy ]] && had_policy=1
  if [[ $had_policy == 0 ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge \
    >> "$dir/apt.log" 2>&1 || { [[ $had_policy == 1 ]] || rm -f "$policy"; tail -20 "$dir/apt.log"; die "apt-get install failed"; }
  [[ $had_policy == 1 ]] || rm -f "$policy"
}

running() { [[ -f $dir/$1.pid ]] && kill -0 "$(cat "$dir/$1.pid")" 2> /dev/null; }

# start NAME COMMAND...: run COMMAND (a foreground daemon) detached, its pid in $dir/NAME.pid
start_daemon() {
  local name=$1; shift
  if running "$name"; then say "$name already running (pid $(cat "$dir/$name.pid"))"; return; fi
  setsid "$@" > "$dir/log/$name.out" 2>&1 < /dev/null &
  echo $! > "$dir/$name.pid"
}

write_conf() {
  local first_id=$(( ($(date +%s) / 2) % 30000000 + 1000 ))
  cat > "$conf" <<CONF
# written by scripts/slurm_local.sh: this host only, no cgroups, no accounting daemon
ClusterName=parallax-local
# job ids from the clock: a fresh cluster does not hand out the ids (and so the run folders
# runs/<job name>-<id> of the templates) of an earlier one
FirstJobId=$first_id
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# this cluster's munged; a requeued job may start again after cred_expire s (default 120)
AuthInfo=cred_expire=10,socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
# per node: PMIx puts its client directory (spmix_appdir_UID_JOB.STEP) in TmpFS, which must
# differ between slurmds on one host
TmpFS=$dir/tmp/%n
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd-%n.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
# heterogeneous jobs are started by the backfill scheduler only: run it every 2 s (not 30 s),
# and the main loop (requeued jobs) every 5 s (not 60 s)
SchedulerParameters=bf_interval=2,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue/scontrol for 5 minutes
MinJobAge=300
KillWait=30
CONF
  local i=0 n
  for n in "${names[@]}"; do
    i=$((i + 1))
    echo "NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + i)) CPUs=$cpus State=UNKNOWN"
  done >> "$conf"
  local list; list=$(IFS=,; echo "${names[*]}")
  cat >> "$conf" <<CONF
PartitionName=debug Nodes=$list Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$list MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$list MaxTime=INFINITE State=UP
CONF
}

cmd_start() {
  mkdir -p "$dir"/{state,log}
  local n
  for n in "${names[@]}"; do mkdir -p "$dir/spool/$n" "$dir/tmp/$n"; done
  install_packages
  # munge: this cluster's own munged (key, socket, logs in $dir/munge) as the munge user, so
  # that clusters (and a system munged) never share or stop one another's
  mkdir -p "$dir/munge"
  chown munge:munge "$dir/munge" && chmod 711 "$dir/munge"  # munged: socket dir a+x, not writable
  runuser -u munge -- test -x "$dir/munge" || die "the munge user cannot reach $dir/munge (a parent folder not a+x?)"
  if [[ ! -s $dir/munge/munge.key ]]; then
    runuser -u munge -- mungekey --create --keyfile="$dir/munge/munge.key" \
      || die "mungekey could not create $dir/munge/munge.key"
  fi
  if ! munge -S "$socket" -n 2> /dev/null | unmunge -S "$socket" > /dev/null 2>&1; then
    start_daemon munged runuser -u munge -- /usr/sbin/munged -F --socket="$socket" \
      --key-file="$dir/munge/munge.key" --log-file="$dir/munge/munged.log" \
      --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed"
    for _ in $(seq 50); do munge -S "$socket" -n 2> /dev/null | unmunge -S "$socket" > /dev/null 2>&1 && break; sleep 0.2; done
    munge -S "$socket" -n | unmunge -S "$socket" > /dev/null 2>&1 || { cat "$dir/log/munged.out"; die "munged does not answer"; }
  fi
  write_conf
  if [[ ${SLURM_LOCAL_LINK_ETC:-1} == 0 ]]; then
    :
  elif [[ ! -e $etc_conf ]]; then
    mkdir -p /etc/slurm && ln -s "$conf" "$etc_conf"
  elif [[ $(readlink -f "$etc_conf") != "$(readlink -f "$conf")" ]]; then
    say "$etc_conf exists and is not ours: export SLURM_CONF=$conf for sbatch/squeue"
  fi
  export SLURM_CONF=$conf
  # a fresh cluster at every start: no jobs, node states or logs from an earlier one
  if ! running slurmctld; then
    rm -rf "${dir:?}/state" "$dir"/log/slurm* "$dir/log/jobcomp.txt"
    mkdir -p "$dir/state"
  fi
  start_daemon slurmctld /usr/sbin/slurmctld -D -f "$conf"
  for _ in $(seq 50); do scontrol ping 2> /dev/null | grep -q UP && break; sleep 0.2; done
  scontrol ping | grep -q UP || { tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmctld.out"; die "slurmctld not up"; }
  for n in "${names[@]}"; do start_daemon "slurmd-$n" /usr/sbin/slurmd -D -N "$n" -f "$conf"; done
  local up=0 state
  for _ in $(seq 100); do
    up=0
    for n in "${names[@]}"; do
      state=$(sinfo -h -N -n "$n" -o %t 2> /dev/null | head -1)
      [[ $state == idle* || $state == mix* || $state == alloc* ]] && up=$((up + 1))
    done
    [[ $up == "$nodes" ]] && break
    sleep 0.2
  done
  if [[ $up != "$nodes" ]]; then
    sinfo -N -o "%N %t %E" || true
    for n in "${names[@]}"; do tail -20 "$dir/log/slurmd-$n.log" "$dir/log/slurmd-$n.out" 2> /dev/null || true; done
    die "only $up of $nodes node(s) came up (slurmd logs above)"
  fi
  say "up: node(s) ${names[*]}, $cpus CPUs each, partitions debug cpu gpu; config $conf, logs $dir/log"
}

stop_daemon() {
  local name=$1
  if running "$name"; then
    local pid; pid=$(cat "$dir/$name.pid")
    kill "$pid" 2> /dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2> /dev/null && kill -9 "$pid" 2> /dev/null || true
    say "stopped $name (pid $pid)"
  fi
  rm -f "$dir/$name.pid"
}

cmd_stop() {
  if running slurmctld; then  # cancel the jobs: their slurmstepds would outlive slurmd
    export SLURM_CONF=$conf
    local ids; ids=$(squeue -h -o %A 2> /dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${ids// } ]]; then
      say "cancelling jobs $ids"
      # shellcheck disable=SC2086
      scancel $ids 2> /dev/null || true
      for _ in $(seq 60); do [[ -z $(squeue -h 2> /dev/null) ]] && break; sleep 0.5; done
    fi
  fi
  # munged runs as `runuser -u munge -- munged -F`; runuser passes the TERM on to munged
  local f
  for f in "$dir"/slurmd-*.pid; do
    [[ -e $f && $f != *.daemon.pid ]] && stop_daemon "$(basename "$f" .pid)"
  done
  stop_daemon slurmctld
  stop_daemon munged
  if [[ -L $etc_conf && $(readlink "$etc_conf") == "$conf" ]]; then rm -f "$etc_conf"; fi
}

cmd_status() {
  local f d
  for f in "$dir"/munged.pid "$dir"/slurmctld.pid "$dir"/slurmd-*.pid; do
    [[ -e $f && $f != *.daemon.pid ]] || continue
    d=$(basename "$f" .pid)
    if running "$d"; then echo "$d: running (pid $(cat "$f"))"; else echo "$d: not running"; fi
  done
  [[ -f $conf ]] && SLURM_CONF=$conf sinfo -N 2> /dev/null || true
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
