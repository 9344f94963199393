#!/usr/bin/python3
"""scripts/tensorboard_export.py end to end, read back with tests/tensorboard/read_events.py:
  1. crc32c(b"123456789") == 0xE3069283 (exporter and reader);
  2. a metrics.h5 written here with known numbers: every tag, step and value as expected;
  3. --follow on a run that is not done: rows rewritten under it (a resume) are written again,
     and Ctrl-C stops it with exit 0;
  4. a tiny real run (2 islands, diloco) with --follow started before it: events appear while
     it trains, the exporter stops by itself when it is done, and every train/eval/comm/memory
     scalar equals metrics.h5;
  5. when the tensorboard package happens to be importable, its EventAccumulator agrees.
Usage: test_export.py PARALLAX_BINARY SOURCE_DIR WORK_DIR"""
import importlib.util
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

binary, src, work = sys.argv[1:4]
sys.path.insert(0, os.path.join(src, "tests", "tensorboard"))
import read_events  # noqa: E402

EXPORT = [sys.executable, os.path.join(src, "scripts", "tensorboard_export.py")]
failures = []


def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failures.append(what)


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-30)


def event_file(folder):
    files = [f for f in os.listdir(folder) if ".tfevents." in f]
    assert len(files) == 1, f"{folder}: {files}"
    return os.path.join(folder, files[0])


def same_series(got, want, what):
    """got: [(step, float32 value)], want: [(step, value)]"""
    ok = len(got) == len(want) and all(gs == ws and close(gv, float(np.float32(wv)))
                                       for (gs, gv), (ws, wv) in zip(got, want))
    check(ok, f"{what}: {len(want)} points" + ("" if ok else f"\n  got  {got}\n  want {want}"))


shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)

# ---- 1. crc32c test vector ------------------------------------------------------------------
spec = importlib.util.spec_from_file_location("tensorboard_export", EXPORT[1])
exporter = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exporter)
check(exporter.crc32c(b"123456789") == 0xE3069283, "exporter crc32c(b'123456789') == 0xE3069283")
check(read_events.crc32c(b"123456789") == 0xE3069283, "reader crc32c(b'123456789') == 0xE3069283")

# ---- 2. known numbers ------------------------------------------------------------------------
fake = os.path.join(work, "fake")
os.makedirs(fake)
with open(os.path.join(fake, "config.toml"), "w") as f:
    f.write("[topology]\nislands = 2\nranks_per_island = 1\n[train]\nsteps = 100\n")
with h5py.File(os.path.join(fake, "metrics.h5"), "w") as f:
    f["/train/step"] = np.array([10, 20, 30], dtype=np.int64)
    f["/train/loss"] = np.array([3.0, 2.5, 2.0])
    f["/train/lr"] = np.array([1e-3, 2e-3, 3e-3])
    f["/train/tokens"] = np.array([100, 200, 300], dtype=np.int64)
    f["/train/time_s"] = np.array([1.0, 2.0, 3.0])
    f["/eval/step"] = np.array([15, 30], dtype=np.int64)
    f["/eval/loss"] = np.array([2.8, 2.1])
    f["/eval/loss_without_routed"] = np.array([3.0, 2.6])
    # world 3: two learners and one syncer column (-1 until the final row)
    f["/comm/backbone/bytes"] = np.array([[10, 20, -1], [30, 40, -1], [50, 60, 7]], dtype=np.int64)
    f["/memory/peak_bytes"] = np.array([[5, 6, -1], [7, 6, -1], [7, 9, 4]], dtype=np.int64)
    f["/experts/load"] = np.array([[[1, 1, 1, 1]], [[4, 0, 0, 0]], [[2, 1, 1, 0]]], dtype=np.int64)
r = subprocess.run(EXPORT + [fake], capture_output=True, text=True)
check(r.returncode == 0, f"export of the known numbers exits 0 ({r.stderr.strip()})")
path = event_file(os.path.join(fake, "tensorboard"))
evs = read_events.events(path)
check(evs[0]["file_version"] == "brain.Event:2" and not evs[0]["values"], "first event: file_version brain.Event:2")
check(all(e["wall_time"] is not None and e["wall_time"] > 1e9 for e in evs), "every event has a wall_time")
got = read_events.scalars(path)
want = {
    "train/loss": [(10, 3.0), (20, 2.5), (30, 2.0)],
    "train/lr": [(10, 1e-3), (20, 2e-3), (30, 3e-3)],
    "train/tokens": [(10, 100), (20, 200), (30, 300)],
    "train/time_s": [(10, 1.0), (20, 2.0), (30, 3.0)],
    "eval/loss": [(15, 2.8), (30, 2.1)],
    "eval/loss_without_routed": [(15, 3.0), (30, 2.6)],
    "eval/without_routed_gap": [(15, 0.2), (30, 0.5)],
    "comm/backbone/bytes": [(10, 30), (20, 70), (30, 110)],
    "comm/backbone/bytes_per_token": [(10, 0.3), (20, 0.35), (30, 110 / 300)],
    "comm/backbone/others_bytes": [(30, 7)],
    "memory/peak_bytes_max": [(10, 6), (20, 7), (30, 9)],
    "experts/layer0/load_entropy": [(10, math.log(4)), (20, 0.0),
                                    (30, -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))],
    "experts/layer0/load_max_over_mean": [(10, 1.0), (20, 4.0), (30, 2.0)],
}
check(sorted(got) == sorted(want), f"tags: {sorted(got)}")
for tag, series in want.items():
    same_series(got.get(tag, []), series, tag)
# wall_time: the run's start + /train/time_s (eval steps interpolated)
t0 = evs[0]["wall_time"]
walls = {(e["step"], e["values"][0][0].split("/")[0]): e["wall_time"] - t0 for e in evs[1:]}
check(close(walls[(20, "train")], 2.0) and close(walls[(15, "eval")], 1.5), "wall_time = start + time_s")

# ---- 3. --follow on a run that is not done; a resume rewrites rows; Ctrl-C -----------------
follow_out = os.path.join(work, "fake_follow")
p = subprocess.Popen(EXPORT + [fake, "--out", follow_out, "--follow", "--poll", "0.2"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
time.sleep(2.0)
check(p.poll() is None, "--follow waits while the run is not done (step 30 of 100)")
check(read_events.scalars(event_file(follow_out)) == got, "--follow wrote the same scalars as the plain export")
with h5py.File(os.path.join(fake, "metrics.h5"), "r+") as f:  # resumed from step 10, other losses
    f["/train/loss"][1:] = [2.4, 1.9]
time.sleep(2.0)
p.send_signal(signal.SIGINT)
out, _ = p.communicate(timeout=20)
check(p.returncode == 0 and "stopped" in out, f"Ctrl-C stops --follow with exit 0 ({out.strip()!r})")
same_series(read_events.scalars(event_file(follow_out))["train/loss"],
            [(10, 3.0), (20, 2.5), (30, 2.0), (20, 2.4), (30, 1.9)], "--follow wrote the rewritten rows again")
restarts = [e["step"] for e in read_events.events(event_file(follow_out)) if e["session_status"] == 1]
check(restarts == [20], f"one SessionLog START, at step 20 ({restarts})")
shown = read_events.scalars(event_file(follow_out), purge=True)
same_series(shown["train/loss"], [(10, 3.0), (20, 2.4), (30, 1.9)], "after the purge: the rewritten train/loss")
same_series(shown["eval/loss"], want["eval/loss"], "after the purge: eval/loss written again")

# ---- 4. a real run, followed live ------------------------------------------------------------
env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
data = os.path.join(work, "data")
subprocess.run([binary, "data", "prepare", "--input", "/usr/share/games/fortunes", "--out", data,
                "--vocab", "512"], check=True, capture_output=True, env=env)
run = os.path.join(work, "run")
tb = os.path.join(work, "run_tb")
follower = subprocess.Popen(EXPORT + [run, "--out", tb, "--follow", "--poll", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
train = subprocess.Popen(["mpirun", "-np", "2", "--oversubscribe", binary, "train",
                          os.path.join(src, "experiments", "tiny.toml"), "--out", run,
                          f"data.dir={data}", "topology.islands=2", "train.mode=diloco",
                          "sync.backbone_every=10", "train.steps=60", "train.warmup_steps=5",
                          "log.every=5", "data.eval_every=20", "data.eval_batches=2",
                          "checkpoint.every=30"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
live_steps = set()
while train.poll() is None:
    if os.path.isdir(tb) and any(".tfevents." in f for f in os.listdir(tb)):
        try:
            live_steps |= {s for s, _ in read_events.scalars(event_file(tb)).get("train/loss", [])}
        except ValueError:
            pass  # the exporter is in the middle of a record
    time.sleep(0.3)
train_log = train.stdout.read()
check(train.returncode == 0, "tiny run finished" + ("" if train.returncode == 0 else "\n" + train_log[-3000:]))
try:
    fout, _ = follower.communicate(timeout=60)
except subprocess.TimeoutExpired:
    follower.kill()
    fout, _ = follower.communicate()
check(follower.returncode == 0 and "run done at step 60" in fout, f"--follow stopped by itself at the end ({fout.strip()!r})")
check(any(s < 60 for s in live_steps), f"events were exported while the run trained (steps seen live: {sorted(live_steps)})")
got = read_events.scalars(event_file(tb))
with h5py.File(os.path.join(run, "metrics.h5"), "r") as f:
    steps = [int(s) for s in f["/train/step"]]
    for name in ("loss", "lr", "tokens_per_s", "grad_norm", "aux_loss"):
        same_series(got.get(f"train/{name}", []), list(zip(steps, f[f"/train/{name}"])), f"run train/{name}")
    same_series(got.get("eval/loss", []), list(zip([int(s) for s in f["/eval/step"]], f["/eval/loss"])), "run eval/loss")
    tokens = np.array(f["/train/tokens"])
    for tier in f["comm"]:
        b = np.array(f["comm"][tier]["bytes"])[:, :2]  # 2 learners
        same_series(got.get(f"comm/{tier}/bytes", []), list(zip(steps, b.sum(axis=1))), f"run comm/{tier}/bytes")
        same_series(got.get(f"comm/{tier}/bytes_per_token", []), list(zip(steps, b.sum(axis=1) / tokens)),
                    f"run comm/{tier}/bytes_per_token")
    check(max(v for _, v in got["comm/backbone/bytes"]) > 0, "the backbone tier sent bytes")
    peak = np.array(f["/memory/peak_bytes"])
    same_series(got.get("memory/peak_bytes_max", []), list(zip(steps, peak.max(axis=1))), "run memory/peak_bytes_max")
    load = np.array(f["/experts/load"], dtype=float)
    for layer in range(load.shape[1]):
        mx = load[:, layer, :].max(axis=1) / load[:, layer, :].mean(axis=1)
        same_series(got.get(f"experts/layer{layer}/load_max_over_mean", []), list(zip(steps, mx)),
                    f"run experts/layer{layer}/load_max_over_mean")

# ---- 5. TensorBoard's own reader, when installed ---------------------------------------------
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:
    print("skip: tensorboard not importable (its EventAccumulator check is optional)")
else:
    acc = EventAccumulator(follow_out)  # it drops the out-of-order steps: the newest rows win
    acc.Reload()
    same_series([(e.step, e.value) for e in acc.Scalars("train/loss")], [(10, 3.0), (20, 2.4), (30, 1.9)],
                "EventAccumulator train/loss after the rewrite")
    same_series([(e.step, e.value) for e in acc.Scalars("eval/loss")], want["eval/loss"],
                "EventAccumulator eval/loss after the rewrite")
    acc = EventAccumulator(os.path.join(fake, "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    check(sorted(tags) == sorted(want), f"EventAccumulator tags: {sorted(tags)}")
    for tag, series in want.items():
        same_series([(e.step, e.value) for e in acc.Scalars(tag)], series, f"EventAccumulator {tag}")

print(f"tensorboard export: {'FAILED: ' + '; '.join(failures) if failures else 'ok'}")
sys.exit(1 if failures else 0)
