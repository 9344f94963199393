#!/usr/bin/env python3
"""`parallax plan` against the measured training heap (issue: scale, "planner = measurement").

Trains each case of a set of small configs for a few steps (mpirun, a checkpoint and an
evaluation included), reads every rank's /memory/heap_peak_bytes from its metrics.h5 (the peak
of the C++ heap, counted by the replaced operator new) and sets it beside the plan's total for
the rank's role (`parallax plan --json`). Prints a markdown table and exits 1 when a rank is
off by more than --tolerance (default 15%).

Usage: plan_vs_measured.py [--build build] [--data DIR] [--out DIR] [--tolerance 0.15]
                           [--config experiments/tiny.toml] [--only NAME ...]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tomllib

import h5py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, world size, overrides): the mechanisms the plan models, each on its own
CASES = [
    ("sync 1 rank", 1, ["train.mode=sync"]),
    ("sync 1 rank, 4 micro-batches", 1, ["train.mode=sync", "train.micro_batches=4"]),
    ("sync 1 rank, recompute attention", 1, ["train.mode=sync", "train.recompute=attention"]),
    ("sync 2 ranks (expert parallel)", 2, ["train.mode=sync", "topology.islands=2"]),
    ("diloco 2 islands x 1", 2, ["train.mode=diloco", "topology.islands=2", "sync.backbone_every=2"]),
    ("diloco 1 island x 2 (D = 2)", 2, ["train.mode=diloco", "topology.ranks_per_island=2"]),
    ("diloco 1 island x 2 (D = 2), ZeRO-1", 2, ["train.mode=diloco", "topology.ranks_per_island=2",
                                                 "train.zero=1"]),
    ("sync 2 ranks, ZeRO-1", 2, ["train.mode=sync", "topology.islands=2", "train.zero=1"]),
    ("diloco 2 x 1 + syncer, int8", 3, ["train.mode=diloco", "topology.islands=2", "topology.syncers=1",
                                        "sync.backbone_sync=syncer", "sync.backbone_every=2",
                                        "sync.outer_dtype=int8"]),
    ("parallax 2 x 1", 2, ["train.mode=parallax", "topology.islands=2", "sync.backbone_every=2"]),
    ("parallax 2 x 1, 2 micro-batches", 2, ["train.mode=parallax", "topology.islands=2",
                                            "sync.backbone_every=2", "train.micro_batches=2"]),
    ("parallax 2 x 1 + expert worker", 3, ["train.mode=parallax", "topology.islands=2",
                                           "topology.expert_workers=1", "sync.backbone_every=2"]),
    ("parallax 1 x 2 + expert worker, ZeRO-1", 3, ["train.mode=parallax", "topology.ranks_per_island=2",
                                                    "topology.expert_workers=1", "train.zero=1"]),
    ("parallax 2 x 1, recompute experts", 2, ["train.mode=parallax", "topology.islands=2",
                                              "sync.backbone_every=2", "train.recompute=experts",
                                              "model.n_layers=3"]),
    ("parallax 2 x 1, full views", 2, ["train.mode=parallax", "topology.islands=2",
                                       "sync.backbone_every=2", "experts.view=full"]),
    ("sync 2 x 2 stages, 4 micro-batches", 4, ["train.mode=sync", "topology.islands=2",
                                               "topology.ranks_per_island=2", "topology.pipeline_stages=2",
                                               "model.n_layers=4", "train.micro_batches=4"]),
    ("diloco 1 x 4 stages, 4 micro-batches", 4, ["train.mode=diloco", "topology.ranks_per_island=4",
                                                 "topology.pipeline_stages=4", "model.n_layers=4",
                                                 "train.micro_batches=4", "sync.backbone_every=2"]),
    ("diloco 1 x 2 stages of 2 ranks (D = 2)", 4, ["train.mode=diloco", "topology.ranks_per_island=4",
                                                   "topology.pipeline_stages=2", "model.n_layers=4",
                                                   "train.micro_batches=2", "sync.backbone_every=2"]),
    ("diloco 1 x 2 stages of 2 ranks, ZeRO-1", 4, ["train.mode=diloco", "topology.ranks_per_island=4",
                                                   "topology.pipeline_stages=2", "model.n_layers=4",
                                                   "train.micro_batches=2", "sync.backbone_every=2",
                                                   "train.zero=1"]),
    ("sync 1 x 2 stages of 2 ranks (D = 2)", 4, ["train.mode=sync", "topology.ranks_per_island=4",
                                                 "topology.pipeline_stages=2", "model.n_layers=4",
                                                 "train.micro_batches=2"]),
    ("diloco 2 x 2 stages, 2 micro-batches, recompute attention", 4,
     ["train.mode=diloco", "topology.islands=2", "topology.ranks_per_island=2",
      "topology.pipeline_stages=2", "model.n_layers=4", "train.micro_batches=2",
      "sync.backbone_every=2", "train.recompute=attention"]),
    ("parallax 2 x 2 stages + expert worker, 2 micro-batches", 5,
     ["train.mode=parallax", "topology.islands=2", "topology.ranks_per_island=2",
      "topology.pipeline_stages=2", "model.n_layers=4", "topology.expert_workers=1",
      "train.micro_batches=2", "sync.backbone_every=2"]),
    ("parallax 1 x 2 stages of 2 ranks + expert worker, recompute layers, ZeRO-1", 5,
     ["train.mode=parallax", "topology.ranks_per_island=4", "topology.pipeline_stages=2",
      "model.n_layers=4", "topology.expert_workers=1", "train.micro_batches=2",
      "train.recompute=layers", "train.zero=1"]),
    ("parallax 1 x 4 stages + expert worker, 4 micro-batches, lowrank views", 5,
     ["train.mode=parallax", "topology.ranks_per_island=4", "topology.pipeline_stages=4",
      "model.n_layers=4", "topology.expert_workers=1", "train.micro_batches=4",
      "experts.view=lowrank"]),
    ("parallax 2 x 1 + expert worker, lowrank views", 3, ["train.mode=parallax", "topology.islands=2",
                                                         "topology.expert_workers=1", "experts.view=lowrank"]),
    ("sync 1 rank, recompute layers", 1, ["train.mode=sync", "train.recompute=layers"]),
]
COMMON = ["train.steps=4", "train.warmup_steps=1", "data.eval_every=4", "data.eval_batches=2",
          "checkpoint.every=4", "log.every=2"]


def role_of(rank, topo):
    R = topo["ranks_per_island"]
    learners = topo["islands"] * R
    stages = topo.get("pipeline_stages", 1)
    if rank < learners:
        return "learner" if stages == 1 else f"learner stage {(rank % R) // (R // stages)}"
    return "syncer" if rank < learners + topo.get("syncers", 0) else "expert worker"


def run_case(args, name, np_, overrides):
    folder = os.path.join(args.out, re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_"))
    binary = os.path.join(args.build, "parallax")
    ov = COMMON + overrides + ([f"data.dir={args.data}"] if args.data else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "-np", str(np_), "--oversubscribe", binary, "train", args.config, "--out", folder] + ov
    subprocess.run(["rm", "-rf", folder])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{name}: training failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    plan = subprocess.run([binary, "plan", "--json", args.config] + ov, capture_output=True, text=True)
    if plan.returncode != 0:
        sys.exit(f"{name}: parallax plan failed: {plan.stderr}")
    roles = {r["role"]: r for r in json.loads(plan.stdout)["roles"]}
    with h5py.File(os.path.join(folder, "metrics.h5"), "r") as f:
        heap = f["/memory/heap_peak_bytes"][-1]
    with open(os.path.join(folder, "config.toml"), "rb") as c:
        topo = tomllib.load(c)["topology"]
    rows = []
    for rank, measured in enumerate(heap):
        role = role_of(rank, topo)
        rows.append((name, rank, role, roles[role]["total_bytes"], int(measured), roles[role]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--config", default=os.path.join(ROOT, "experiments", "tiny.toml"))
    ap.add_argument("--data", default="", help="data folder (default: the config's data.dir)")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "plan_vs_measured"))
    ap.add_argument("--tolerance", type=float, default=0.15)
    ap.add_argument("--only", nargs="*", default=None, help="case names to run (default: all)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, np_, ov in CASES:
        if args.only is None or name in args.only:
            rows += run_case(args, name, np_, ov)
            print(f"ran: {name}", file=sys.stderr)
    print("| case | rank | role | plan MB | measured heap MB | measured / plan | plan: params, grads, AdamW, outer, activations, buffers (MB) |")
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for name, rank, role, plan, measured, r in rows:
        ratio = measured / plan if plan > 0 else float("inf")
        ok = abs(ratio - 1) <= args.tolerance
        bad += not ok
        parts = ", ".join(f"{r[k] / 1e6:.2f}" for k in
                          ["param_bytes", "grad_bytes", "optim_bytes", "outer_bytes", "act_bytes", "other_bytes"])
        print(f"| {name} | {rank} | {role} | {plan / 1e6:.2f} | {measured / 1e6:.2f} | {ratio:.3f}{'' if ok else ' (off)'} | {parts} |")
    print(f"\n{len(rows) - bad} of {len(rows)} ranks within {100 * args.tolerance:.0f}% of the plan")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
