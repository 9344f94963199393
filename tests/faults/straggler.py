#!/usr/bin/python3
"""Fault test: a straggler must not stall the other islands (decoupled islands,
roles/stop_agreement.hpp). For diloco (4 islands + 1 syncer) and parallax (4 islands + 1 syncer
+ 1 expert worker), with sync.quorum = 3 < 4 islands and train.deterministic = false: pause
island 3's rank (SIGSTOP) for PAUSE_S seconds, count the steps islands 0-2 take meanwhile (from
their progress lines in RUN/logs/rankN.log), resume it (SIGCONT), wait until it steps again,
then SIGUSR1 to mpirun (Slurm's warning; mpirun forwards it, while on SIGTERM it kills
the ranks after about a second, too soon for a lagging island to catch up): every island must stop at the same agreed step with one checkpoint, the
syncer must report the paused island's late pushes, and metrics.h5 must hold every interval's
row (the paused island's reports arrive late, none is lost).

usage: straggler.py PARALLAX_BINARY SOURCE_DIR WORK_DIR"""
import os
import re
import signal
import subprocess
import sys
import time

import h5py

PAUSE_S = 8.0
MIN_STEPS_DURING_PAUSE = 10  # a lock-stepped run takes 0; tiny on 2 cores takes ~5-20 per second
STEP = re.compile(r"step +(\d+)/\d+ \| loss")


def fail(msg):
    print("FAIL:", msg, flush=True)
    sys.exit(1)


def newest_step(run, rank):
    try:
        with open(f"{run}/logs/rank{rank}.log") as f:
            steps = [int(m.group(1)) for m in STEP.finditer(f.read())]
    except FileNotFoundError:
        return 0
    return steps[-1] if steps else 0


def wait_for(what, pred, timeout):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def rank_pid(run, world_rank):
    """The pid of the rank of THIS run (its command line names the run folder)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if run.encode() in cmd and f"OMPI_COMM_WORLD_RANK={world_rank}".encode() in env:
            return int(pid)
    fail(f"no process of rank {world_rank} of {run}")


def run_case(binary, src, work, mode, np, extra):
    run = f"{work}/{mode}"
    cmd = ["mpirun", "-np", str(np), "--oversubscribe", binary, "train",
           f"{src}/experiments/tiny.toml", "--out", run,
           f"data.dir={work}/data", "train.steps=100000", "train.warmup_steps=5",
           f"train.mode={mode}", "train.deterministic=false", "topology.islands=4",
           "topology.syncers=1", "sync.backbone_sync=syncer", "sync.quorum=3",
           "sync.grace_steps=2", "sync.backbone_every=10", "log.every=5", "checkpoint.every=0", "data.eval_every=0"] + extra
    log = open(f"{work}/{mode}.out", "w")
    job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for("the first steps", lambda: min(newest_step(run, r) for r in range(4)) >= 10, 180)
        straggler = rank_pid(run, 3)
        before = [newest_step(run, r) for r in range(4)]
        os.kill(straggler, signal.SIGSTOP)
        time.sleep(PAUSE_S)
        during = [newest_step(run, r) for r in range(4)]
        os.kill(straggler, signal.SIGCONT)
        gained = [during[r] - before[r] for r in range(3)]
        print(f"{mode}: steps of islands 0-2 during the {PAUSE_S:.0f} s pause of island 3: "
              f"{gained} (island 3: {during[3] - before[3]})", flush=True)
        if min(gained) < MIN_STEPS_DURING_PAUSE:
            fail(f"{mode}: the other islands stalled while island 3 was paused: {gained} steps")
        wait_for("island 3 to step again", lambda: newest_step(run, 3) > during[3] + 5, 120)
        job.send_signal(signal.SIGUSR1)
        rc = job.wait(timeout=180)
    finally:
        if job.poll() is None:
            job.kill()
        log.close()
    out = open(f"{work}/{mode}.out").read()
    if rc != 0:
        fail(f"{mode}: mpirun exited {rc} after SIGUSR1:\n{out[-3000:]}")
    ckpts = sorted(os.listdir(f"{run}/checkpoints"))
    if len([c for c in ckpts if c.endswith(".h5")]) != 1:
        fail(f"{mode}: expected one checkpoint (the agreed stop step), found {ckpts}")
    stop = int(re.search(r"step_(\d+)\.h5", ckpts[-1]).group(1))
    late = [int(m) for m in re.findall(r"merges, (\d+) late pushes", open(f"{run}/logs/rank4.log").read())]
    if not late or late[0] < 1:
        fail(f"{mode}: the syncer counted no late push of the paused island ({late})")
    with h5py.File(f"{run}/metrics.h5", "r") as m:
        steps = list(m["/train/step"][:])
        loads = m["/experts/load"][:]
    expect = list(range(5, stop + 1, 5))
    if stop % 5:
        expect.append(stop)
    if steps != expect:
        fail(f"{mode}: metrics rows {steps[:3]}..{steps[-3:]} ({len(steps)}), expected 5..{stop} ({len(expect)})")
    # the row of an interval sums every island's expert loads: 4 islands x 512 tokens x top-k
    print(f"{mode}: stopped at step {stop} (checkpoint), {late[0]} late pushes, {len(steps)} rows, "
          f"load per row {int(loads[0].sum())}", flush=True)


def main():
    binary, src, work = sys.argv[1:4]
    os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    subprocess.run([binary, "data", "prepare", "--input", "/usr/share/games/fortunes", "--out",
                    f"{work}/data", "--vocab", "512"], check=True, stdout=subprocess.DEVNULL)
    run_case(binary, src, work, "diloco", 5, [])
    run_case(binary, src, work, "parallax", 6, ["topology.expert_workers=1"])
    print("PASS")


if __name__ == "__main__":
    main()
