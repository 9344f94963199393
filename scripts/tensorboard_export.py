#!/usr/bin/python3
"""A run folder's metrics.h5 as a TensorBoard event file (which TensorBoard, W&B and Aim read),
with neither tensorflow nor tensorboard installed: the TFRecord framing and the Event /
Summary protobufs are written by hand.

  /usr/bin/python3 scripts/tensorboard_export.py RUN_DIR [--out DIR] [--follow] [--poll S]

Writes DIR/events.out.tfevents.<start>.parallax (DIR default RUN_DIR/tensorboard), anew at
every call. --follow keeps reading metrics.h5 (opened read-only without HDF5 file locking,
re-opened at every poll, so it works while parallax writes it) and appends the new rows; it
stops when the run is done (its last /train/step is config.toml's train.steps and the final
/comm row is written) or on Ctrl-C. A resumed run rewrites its rows after the checkpoint: from
the first row that changed, the exporter writes a SessionLog START event (TensorBoard then
drops the events from that step on) and the rows again.

Scalars (step: the group's /…/step):
  train/<name>, eval/<name>        every 1-D dataset of /train and /eval (loss, lr, tokens_per_s,
                                   loss_without_routed, ...), and eval/without_routed_gap
  comm/<tier>/bytes                /comm/<tier>/bytes summed over the learner ranks (cumulative)
  comm/<tier>/bytes_per_token      that sum / /train/tokens (tokens of all islands)
  comm/<tier>/others_bytes         syncer + expert-worker columns, once known (the final row)
  memory/peak_bytes_max            max of /memory/peak_bytes over the ranks that reported
  experts/layer<l>/load_entropy    entropy (nats) of /experts/load's share per expert, per MoE layer
  experts/layer<l>/load_max_over_mean   the busiest expert's load / the mean load
"""
import argparse
import math
import os
import signal
import socket
import struct
import sys
import time
import tomllib

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # read while parallax holds the file
import h5py  # noqa: E402
import numpy as np  # noqa: E402


# ---- crc32c (Castagnoli, reflected polynomial 0x82F63B78), table-based ------------------------
def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked crc32c of the length, data, masked crc32c of data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


# ---- protobuf encoding (only what Event needs) --------------------------------------------------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def summary_value(tag: str, value: float) -> bytes:
    """Summary.Value: tag = 1 (string), simple_value = 2 (float)."""
    return _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)


def event(wall_time: float, step: int, file_version: str = None, values=(), session_start=False) -> bytes:
    """Event: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
    summary = 5 (Summary: value = 1, repeated), session_log = 7 (SessionLog: status = 1, START = 1); one of 3, 5, 7 per event."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if values:
        out += _field_bytes(5, b"".join(_field_bytes(1, summary_value(t, v)) for t, v in values))
    if session_start:
        out += _field_bytes(7, _varint(1 << 3 | 0) + _varint(1))
    return out


# ---- metrics.h5 -> scalars -----------------------------------------------------------------------
class Snapshot:
    """What one read of metrics.h5 holds: per group (train, eval, comm/<tier>, memory, experts)
    its rows, each (step, [(tag, value)])."""

    def __init__(self, rows, final_step, comm_complete):
        self.rows = rows                  # group -> list of (step, [(tag, value)])
        self.final_step = final_step      # last /train/step or None
        self.comm_complete = comm_complete


def _learners(run_dir, world):
    try:
        with open(os.path.join(run_dir, "config.toml"), "rb") as f:
            topo = tomllib.load(f).get("topology", {})
        return min(world, int(topo.get("islands", 1)) * int(topo.get("ranks_per_island", 1)))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return world


def read_metrics(path, run_dir, complete_only):
    """Reads metrics.h5. complete_only: leave out each dataset's last row (parallax may be
    writing it; every earlier row was flushed before the next one began)."""
    kw = {"locking": False} if _h5py_has_locking() else {}  # HDF5_USE_FILE_LOCKING covers older
    with h5py.File(path, "r", **kw) as f:
        def arr(p):
            return np.array(f[p]) if p in f else None

        def usable(n):
            return max(0, n - 1) if complete_only else n

        rows = {}
        train_step = arr("/train/step")
        tokens = arr("/train/tokens")
        time_s = arr("/train/time_s")
        for group in ("train", "eval"):
            steps = arr(f"/{group}/step")
            if steps is None:
                continue
            names = sorted(k for k in f[group] if k != "step" and f[group][k].ndim == 1)
            cols = {k: np.array(f[group][k]) for k in names}
            n = usable(len(steps))
            out = []
            for i in range(n):
                vals = [(f"{group}/{k}", float(c[i])) for k, c in cols.items() if i < usable(len(c))]
                if group == "eval" and "loss" in cols and "loss_without_routed" in cols \
                        and i < usable(len(cols["loss_without_routed"])) and i < usable(len(cols["loss"])):
                    vals.append(("eval/without_routed_gap",
                                 float(cols["loss_without_routed"][i] - cols["loss"][i])))
                out.append((int(steps[i]), vals))
            rows[group] = out
        comm_complete = True
        if train_step is not None:
            n_train = len(train_step)
            comm = {}
            if "comm" in f:
                for tier in sorted(f["comm"]):
                    if "bytes" in f["comm"][tier]:
                        comm[tier] = np.array(f["comm"][tier]["bytes"])
            comm_complete = all(len(b) >= n_train for b in comm.values())
            world = next(iter(comm.values())).shape[1] if comm else 0
            learners = _learners(run_dir, world)
            for tier, b in comm.items():
                out = []
                for i in range(min(usable(len(b)), n_train)):
                    learner_sum = float(b[i, :learners].sum())
                    vals = [(f"comm/{tier}/bytes", learner_sum)]
                    if tokens is not None and i < len(tokens) and tokens[i] > 0:
                        vals.append((f"comm/{tier}/bytes_per_token", learner_sum / float(tokens[i])))
                    others = b[i, learners:]
                    if len(others) and (others >= 0).all():
                        vals.append((f"comm/{tier}/others_bytes", float(others.sum())))
                    out.append((int(train_step[i]), vals))
                rows[f"comm/{tier}"] = out
            peak = arr("/memory/peak_bytes")
            out = []
            if peak is not None:
                for i in range(min(usable(len(peak)), n_train)):
                    known = peak[i][peak[i] >= 0]
                    if len(known):
                        out.append((int(train_step[i]), [("memory/peak_bytes_max", float(known.max()))]))
            rows["memory"] = out
            load = arr("/experts/load")
            out = []
            if load is not None:
                for i in range(min(usable(len(load)), n_train)):
                    vals = []
                    for layer, counts in enumerate(np.asarray(load[i], dtype=float)):
                        total = counts.sum()
                        if total <= 0:
                            continue
                        p = counts / total
                        entropy = -float(sum(x * math.log(x) for x in p if x > 0))
                        vals += [(f"experts/layer{layer}/load_entropy", entropy),
                                 (f"experts/layer{layer}/load_max_over_mean", float(counts.max() / counts.mean()))]
                    if vals:
                        out.append((int(train_step[i]), vals))
            rows["experts"] = out
        final = int(train_step[-1]) if train_step is not None and len(train_step) else None
        return Snapshot(rows, final, comm_complete), (train_step, time_s)


def _h5py_has_locking():
    major, minor = (int(x) for x in h5py.__version__.split(".")[:2])
    return (major, minor) >= (3, 5)


def planned_steps(run_dir):
    try:
        with open(os.path.join(run_dir, "config.toml"), "rb") as f:
            return int(tomllib.load(f)["train"]["steps"])
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError):
        return None


# ---- the event file ------------------------------------------------------------------------------
class EventWriter:
    """Writes events for each group's rows, remembering per group the rows it wrote; from the
    first row that differs (a resumed run rewrote it) every row is written again."""

    def __init__(self, out_dir, start_time):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, f"events.out.tfevents.{int(start_time)}.parallax")
        self.start = start_time
        self.f = open(self.path, "wb")  # anew at every export
        self.written = {}  # group -> list of (step, values) written
        self.events = 0
        self.f.write(tfrecord(event(start_time, 0, file_version="brain.Event:2")))
        self.f.flush()

    def _wall(self, step, clock):
        steps, time_s = clock
        if steps is None or time_s is None or not len(time_s) or len(steps) < len(time_s):
            return self.start
        return self.start + float(np.interp(step, steps[:len(time_s)], time_s))

    def write(self, snap, clock):
        # the first step whose row differs from the one written (a resumed run rewrote it)
        restart = None
        for group, rows in snap.rows.items():
            old = self.written.get(group, [])
            for o, r in zip(old, rows):
                if o != r:
                    restart = o[0] if restart is None else min(restart, o[0])
                    break
        new = 0
        if restart is not None:
            # SessionLog START at that step: TensorBoard drops every event of every tag with a
            # step >= it (file_version 2 purges only so), then the rows from it come again
            self.f.write(tfrecord(event(self._wall(restart, clock), restart, session_start=True)))
            new += 1
            for group in self.written:
                self.written[group] = [r for r in self.written[group] if r[0] < restart]
        for group, rows in snap.rows.items():
            old = self.written.get(group, [])
            if len(rows) <= len(old):  # nothing new (a shorter read: rows not flushed yet)
                continue
            for step, vals in rows[len(old):]:
                if vals:
                    self.f.write(tfrecord(event(self._wall(step, clock), step, values=vals)))
                    new += 1
            self.written[group] = list(rows)
        self.f.flush()
        self.events += new
        return new

    def close(self):
        self.f.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--out", help="folder for the event file (default RUN_DIR/tensorboard)")
    p.add_argument("--follow", action="store_true", help="keep appending new rows until the run is done")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between reads with --follow (default 2)")
    a = p.parse_args()
    path = os.path.join(a.run_dir, "metrics.h5")
    out = a.out or os.path.join(a.run_dir, "tensorboard")
    cfg = os.path.join(a.run_dir, "config.toml")

    def done(snap):  # config.toml is read at every poll: --follow may start before the run
        steps_planned = planned_steps(a.run_dir)
        return steps_planned is not None and snap.final_step == steps_planned and snap.comm_complete

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    writer = None
    try:
        if not a.follow:
            if not os.path.exists(path):
                print(f"tensorboard_export: error: {path}: no such file", file=sys.stderr)
                return 2
            try:
                snap, clock = read_metrics(path, a.run_dir, complete_only=False)
            except OSError as e:
                print(f"tensorboard_export: error: {path}: {e}", file=sys.stderr)
                return 2
            start = os.stat(cfg).st_mtime if os.path.exists(cfg) else os.stat(path).st_mtime
            writer = EventWriter(out, start)
            writer.write(snap, clock)
        else:
            last_sig = None
            while True:
                sig = None
                if os.path.exists(path):
                    st = os.stat(path)
                    sig = (st.st_mtime_ns, st.st_size)
                if sig is not None:
                    # a file unchanged since the last poll is not being written: every row counts;
                    # otherwise each dataset's last row waits (it may be half written)
                    quiet = sig == last_sig
                    try:
                        snap, clock = read_metrics(path, a.run_dir, complete_only=not quiet)
                    except (OSError, KeyError, ValueError, RuntimeError, IndexError):
                        snap = None  # caught mid-write: read again at the next poll
                    if snap is not None:
                        if writer is None:
                            start = os.stat(cfg).st_mtime if os.path.exists(cfg) else time.time()
                            writer = EventWriter(out, start)
                            print(f"tensorboard_export: following {path} -> {writer.path}", flush=True)
                        writer.write(snap, clock)
                        if done(snap) and quiet:
                            print(f"tensorboard_export: run done at step {snap.final_step}", flush=True)
                            break
                last_sig = sig
                time.sleep(a.poll)
    except KeyboardInterrupt:
        print("tensorboard_export: stopped", flush=True)
    finally:
        if writer is not None:
            writer.close()
            print(f"tensorboard_export: {writer.events} events in {writer.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
