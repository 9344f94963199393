#!/usr/bin/python3
"""Paper-style sweeps: a sweep is a TOML file (experiments/sweeps/*.toml) with a base config,
common overrides, named runs (overrides and ranks) and seeds.

  bash scripts/sweep.sh run   SWEEP [--out runs/sweeps] [--dry-run]
      runs every (run, seed) not finished yet, one at a time, with mpirun; a run that was
      killed continues from its newest checkpoint (--resume); finished runs are skipped.
  bash scripts/sweep.sh slurm SWEEP [--out runs/sweeps] [--submit] [--sbatch="ARGS"]
      writes the list of commands for slurm/sweep_array.sbatch and prints the sbatch line;
      --submit also runs it (from the repo root), with ARGS (e.g. "--cpus-per-task=1") added.
  bash scripts/sweep.sh table SWEEP [--out runs/sweeps]
      from the run folders alone (metrics.h5, config.toml): table.md and table.csv, and the
      plots loss_vs_tokens.png, loss_vs_bytes.png, bytes_by_tier.png, expert_load.png.

Run folders: OUT/<sweep name>/<run name>/seed<seed>/ (a parallax run folder each).
"""
import argparse
import csv
import math
import re
import json
import os
import shlex
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(msg):
    print(f"sweep: error: {msg}", file=sys.stderr)
    sys.exit(2)


# ---- the sweep file ------------------------------------------------------------------------
def load_sweep(path):
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except tomllib.TOMLDecodeError as e:
        fail(f"{path}: not valid TOML: {e}")
    sw = doc.get("sweep")
    if not isinstance(sw, dict):
        fail(f"{path}: needs a [sweep] table (name, config, seeds, ranks, overrides)")
    for key in ("name", "config"):
        if not isinstance(sw.get(key), str) or not sw[key]:
            fail(f"{path}: [sweep] {key} must be a non-empty string")
    seeds = sw.get("seeds", [1234])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        fail(f"{path}: [sweep] seeds must be a non-empty list of integers >= 0")
    runs = doc.get("run")
    if not isinstance(runs, list) or not runs:
        fail(f"{path}: needs at least one [[run]] (name, overrides, optional ranks)")
    names = set()
    for i, r in enumerate(runs):
        if not isinstance(r.get("name"), str) or not r["name"] or "/" in r["name"]:
            fail(f"{path}: [[run]] #{i + 1}: name must be a non-empty string without '/'")
        if r["name"] in names:
            fail(f"{path}: [[run]] name {r['name']!r} appears twice")
        names.add(r["name"])
        ov = r.get("overrides", [])
        if not isinstance(ov, list) or not all(isinstance(o, str) and "=" in o for o in ov):
            fail(f"{path}: [[run]] {r['name']}: overrides must be a list of \"key=value\" strings")
        ranks = r.get("ranks", sw.get("ranks", 1))
        if not isinstance(ranks, int) or ranks < 1:
            fail(f"{path}: [[run]] {r['name']}: ranks must be an integer >= 1")
    base_ov = sw.get("overrides", [])
    if not isinstance(base_ov, list) or not all(isinstance(o, str) and "=" in o for o in base_ov):
        fail(f"{path}: [sweep] overrides must be a list of \"key=value\" strings")
    config = sw["config"] if os.path.isabs(sw["config"]) else os.path.join(ROOT, sw["config"])
    if not os.path.isfile(config):
        fail(f"{path}: [sweep] config {sw['config']}: no such file")
    return {
        "name": sw["name"], "config": config, "seeds": seeds, "overrides": base_ov,
        "baseline": sw.get("baseline", runs[0]["name"]),
        "runs": [{"name": r["name"], "overrides": r.get("overrides", []),
                  "ranks": r.get("ranks", sw.get("ranks", 1))} for r in runs],
    }


def run_dir(out, sweep, run, seed):
    return os.path.join(out, sweep["name"], run["name"], f"seed{seed}")


def train_command(sweep, run, seed, folder, resume, binary):
    cmd = ["mpirun", "-np", str(run["ranks"]), "--oversubscribe", binary, "train", sweep["config"],
           "--out", folder]
    if resume:
        cmd.append("--resume")
    return cmd + sweep["overrides"] + run["overrides"] + [f"train.seed={seed}"]


def finished(folder):
    return os.path.exists(os.path.join(folder, "DONE"))


def has_checkpoint(folder):
    ck = os.path.join(folder, "checkpoints")
    return os.path.isdir(ck) and any(n.endswith(".h5") for n in os.listdir(ck))


# ---- run / slurm ---------------------------------------------------------------------------
def cmd_run(args):
    sweep = load_sweep(args.sweep)
    binary = os.path.join(ROOT, "build", "parallax")
    if not os.access(binary, os.X_OK) and not args.dry_run:
        fail(f"{binary}: not built (run bash scripts/build.sh)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    jobs = [(r, s) for r in sweep["runs"] for s in sweep["seeds"]]
    for i, (run, seed) in enumerate(jobs, 1):
        folder = run_dir(args.out, sweep, run, seed)
        tag = f"[{i}/{len(jobs)}] {run['name']} seed {seed}"
        if finished(folder):
            print(f"{tag}: done before, skipped", flush=True)
            continue
        resume = has_checkpoint(folder)
        cmd = train_command(sweep, run, seed, folder, resume, binary)
        print(f"{tag}: {'resuming' if resume else 'starting'}: {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        log = os.path.join(os.path.dirname(folder), f"seed{seed}.log")
        with open(log, "a") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if rc != 0:
            with open(log) as f:
                errors = [l.strip() for l in f if "error" in l]
            fail(f"{tag} failed with exit code {rc}{': ' + errors[-1] if errors else ''}; log {log} "
                 "(run the sweep again to continue)")
        with open(log) as f:
            done = [l for l in f if "done:" in l]
        print(f"{tag}: {done[-1].strip() if done else 'finished'}", flush=True)
        with open(os.path.join(folder, "DONE"), "w") as f:
            f.write(shlex.join(cmd) + "\n")


def cmd_slurm(args):
    """One overrides list per world size for slurm/sweep_array.sbatch (a line per run and seed,
    naming its run folder first), and the sbatch line of each."""
    sweep = load_sweep(args.sweep)
    folder0 = os.path.join(args.out, sweep["name"])
    os.makedirs(folder0, exist_ok=True)
    by_ranks = {}
    for run in sweep["runs"]:
        for seed in sweep["seeds"]:
            folder = os.path.abspath(run_dir(args.out, sweep, run, seed))
            ov = sweep["overrides"] + run["overrides"] + [f"train.seed={seed}"]
            by_ranks.setdefault(run["ranks"], []).append(f"dir={folder} " + " ".join(ov))
    for ranks, lines in sorted(by_ranks.items()):
        lst = os.path.join(folder0, f"slurm_np{ranks}.txt")
        with open(lst, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {lst} ({len(lines)} runs of {ranks} ranks)")
        env = {"SWEEP_FILE": lst, "CONFIG": os.path.relpath(sweep["config"], ROOT), "BASE_OVERRIDES": ""}
        cmd = (["sbatch", f"--array=0-{len(lines) - 1}", f"--ntasks-per-node={ranks}"] +
               shlex.split(args.sbatch or "") + ["slurm/sweep_array.sbatch"])
        print("  " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(cmd))
        if args.submit:
            r = subprocess.run(cmd[:1] + ["--parsable"] + cmd[1:], cwd=ROOT, env=dict(os.environ, **env),
                               capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"sbatch failed (exit {r.returncode}): {r.stderr.strip()}")
            print(f"submitted array job {r.stdout.strip().split(';')[0]} ({len(lines)} tasks)", flush=True)


# ---- table and plots -----------------------------------------------------------------------
def read_run(folder):
    import h5py
    import numpy as np
    path = os.path.join(folder, "metrics.h5")
    if not os.path.exists(path):
        return None
    with h5py.File(path, "r") as f:
        get = lambda k: np.array(f[k]) if k in f else None
        r = {
            "eval_step": get("/eval/step"), "eval_loss": get("/eval/loss"),
            "eval_without_routed": get("/eval/loss_without_routed"),
            "train_tokens": get("/train/tokens"), "train_step": get("/train/step"),
            "tokens_per_s": get("/train/tokens_per_s"), "peak": get("/memory/peak_bytes"),
            "load": get("/experts/load"),
            "comm": {k: np.array(f["comm"][k]["bytes"]) for k in f["comm"]} if "comm" in f else {},
        }
    cfg_path = os.path.join(folder, "config.toml")
    with open(cfg_path, "rb") as c:
        r["config"] = tomllib.load(c)
    topo = r["config"]["topology"]
    r["learners"] = topo["islands"] * topo["ranks_per_island"]
    r["assembled"] = assembled_evals(folder)
    r["assembled_loss"] = assembled_loss(folder, r["assembled"])
    return r


def checkpoint_steps(folder):
    d = os.path.join(folder, "checkpoints")
    names = os.listdir(d) if os.path.isdir(d) else []
    return sorted(int(n[5:13]) for n in names if re.fullmatch(r"step_\d{8}\.h5", n))


def assembled_evals(folder):
    """Validation loss of the model the run produced at each of its checkpoints (`parallax eval
    --assembled-only`: the global backbone of the last outer sync + every expert's master), as
    {step: loss}, cached in FOLDER/assembled_eval.json; checkpoints at the evaluation steps make
    it a series beside the islands' own /eval/loss. Empty without checkpoints or a built binary."""
    cache = os.path.join(folder, "assembled_eval.json")
    got = {}
    if os.path.exists(cache):
        with open(cache) as c:
            old = json.load(c)
        for e in old.get("evals", [old] if "step" in old else []):  # an older cache: one entry
            got[int(e["step"])] = e["loss"]
    steps = [st for st in checkpoint_steps(folder) if st not in got]
    binary = os.path.join(ROOT, "build", "parallax")
    if steps and not os.access(binary, os.X_OK):
        print(f"warning: {binary} not built: no assembled loss for {folder}", file=sys.stderr)
        steps = []
    for st in steps:
        ckpt = os.path.join(folder, "checkpoints", f"step_{st:08d}.h5")
        r = subprocess.run([binary, "eval", "--json", "--assembled-only", ckpt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"warning: parallax eval {ckpt}: {r.stderr.strip()}", file=sys.stderr)
            continue
        got[st] = json.loads(r.stdout.strip().splitlines()[-1])["loss"]
    if steps:
        with open(cache, "w") as c:
            json.dump({"evals": [{"step": k, "loss": got[k]} for k in sorted(got)]}, c)
    return got


def assembled_loss(folder, evals):
    """The assembled loss at the run's newest checkpoint (None without one)."""
    steps = checkpoint_steps(folder)
    return evals.get(steps[-1]) if steps else None


def mean_std(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def summarize(run_name, seeds):
    """One row of the table from the seeds' run folders."""
    loss, ablation, tps, per_tier, others, peak_l, peak_o, tokens = [], [], [], {}, [], [], [], []
    assembled = []
    for r in seeds:
        loss.append(float(r["eval_loss"][-1]) if r["eval_loss"] is not None else None)
        assembled.append(r["assembled_loss"])
        if r["eval_without_routed"] is not None:
            ablation.append(float(r["eval_without_routed"][-1] - r["eval_loss"][-1]))
        tps.append(float(r["tokens_per_s"][-1]))
        tok = float(r["train_tokens"][-1])
        tokens.append(tok)
        n = r["learners"]
        other = 0.0
        for tier, rows in r["comm"].items():
            last = rows[-1]
            per_tier.setdefault(tier, []).append(float(last[:n].sum()) / n / tok)
            other += float(last[n:].clip(min=0).sum()) / tok
        others.append(other)
        peak = r["peak"][-1]
        peak_l.append(float(peak[:n].max()))
        peak_o.append(float(peak[n:].max()) if len(peak) > n and peak[n:].max() > 0 else float("nan"))
    row = {"run": run_name, "seeds": len(seeds)}
    row["val_loss"], row["val_loss_std"] = mean_std(loss)
    row["assembled_loss"], row["assembled_std"] = mean_std(assembled)
    row["without_routed_gap"], _ = mean_std(ablation) if ablation else (float("nan"), 0)
    tiers = {t: mean_std(v)[0] for t, v in per_tier.items()}
    row["tiers"] = tiers
    row["bytes_per_token"] = sum(tiers.values())
    row["others_bytes_per_token"] = mean_std(others)[0]
    row["peak_learner_mb"] = mean_std(peak_l)[0] / 1e6
    row["peak_others_mb"] = mean_std(peak_o)[0] / 1e6
    row["tokens_per_s"] = mean_std(tps)[0]
    row["tokens"] = mean_std(tokens)[0]
    return row


def pareto(points):
    """Indices of the points (x, y) not dominated (lower x and lower y are better)."""
    best = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            best.append(i)
    return best


def cmd_table(args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sweep = load_sweep(args.sweep)
    out = os.path.join(args.out, sweep["name"])
    data = {}
    for run in sweep["runs"]:
        seeds = [read_run(run_dir(args.out, sweep, run, s)) for s in sweep["seeds"]]
        seeds = [s for s in seeds if s is not None]
        if seeds:
            data[run["name"]] = seeds
    if not data:
        fail(f"{out}: no run folder with metrics.h5 yet (run the sweep first)")
    rows = [summarize(name, seeds) for name, seeds in data.items()]
    base = next((r for r in rows if r["run"] == sweep["baseline"]), None)
    tiers = sorted({t for r in rows for t, v in r["tiers"].items() if v > 0})
    for r in rows:
        r["gap_pct"] = 100 * (r["val_loss"] / base["val_loss"] - 1) if base else float("nan")
        r["assembled_gap_pct"] = (100 * (r["assembled_loss"] / base["assembled_loss"] - 1)
                                  if base else float("nan"))
        r["bytes_ratio"] = (r["bytes_per_token"] / base["bytes_per_token"]
                            if base and base["bytes_per_token"] > 0 else float("nan"))
    cfg0 = next(iter(data.values()))[0]["config"]
    title = (f"sweep {sweep['name']}: {os.path.relpath(sweep['config'], ROOT)}, "
             f"{cfg0['topology']['islands']} islands x {cfg0['topology']['ranks_per_island']}, "
             f"{cfg0['train']['steps']} steps, {len(sweep['seeds'])} seed(s)")
    head = (["run", "seeds", "val loss", "+- std", f"gap to {sweep['baseline']} %",
             "assembled val loss", "+- std", f"assembled gap to {sweep['baseline']} %",
             "without routed experts (+nats)", "bytes/token (learner)"] +
            [f"{t} B/tok" for t in tiers] +
            ["others B/tok", f"bytes ratio to {sweep['baseline']}", "peak learner MB",
             "peak others MB", "tokens/s"])
    def cells(r):
        f = lambda x, p=4: "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{p}f}"
        return ([r["run"], str(r["seeds"]), f(r["val_loss"]), f(r["val_loss_std"]), f(r["gap_pct"], 2),
                 f(r["assembled_loss"]), f(r["assembled_std"]), f(r["assembled_gap_pct"], 2),
                 f(r["without_routed_gap"]), f(r["bytes_per_token"], 2)] +
                [f(r["tiers"].get(t, 0.0), 2) for t in tiers] +
                [f(r["others_bytes_per_token"], 2), f(r["bytes_ratio"], 4), f(r["peak_learner_mb"], 1),
                 f(r["peak_others_mb"], 1), f(r["tokens_per_s"], 0)])
    with open(os.path.join(out, "table.md"), "w") as md:
        md.write(f"# {title}\n\n| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
        for r in rows:
            md.write("| " + " | ".join(cells(r)) + " |\n")
    with open(os.path.join(out, "table.csv"), "w", newline="") as c:
        w = csv.writer(c)
        w.writerow(head)
        for r in rows:
            w.writerow(cells(r))

    # validation loss vs tokens (first seed of every run)
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ["-", "--", "-.", ":"]
    for i, (name, seeds) in enumerate(data.items()):
        s = seeds[0]
        if s["eval_loss"] is None:
            continue
        per_step = s["train_tokens"][-1] / s["train_step"][-1]
        color = plt.cm.tab20(i % 20)
        ax.plot(s["eval_step"] * per_step, s["eval_loss"], marker="o", ms=3, label=name,
                color=color, linestyle=styles[(i // 10) % len(styles)])
        shown = sorted(st for st in s["assembled"] if st in set(s["eval_step"].tolist()))
        if s["config"]["train"]["mode"] != "sync" and shown:  # sync: the assembled model is the one evaluated
            ax.plot([st * per_step for st in shown], [s["assembled"][st] for st in shown],
                    marker="x", ms=5, linestyle="none", color=color)
    ax.plot([], [], marker="x", linestyle="none", color="gray",
            label="x: assembled model (global backbone + masters)")
    ax.set_xlabel("tokens trained on (all islands)")
    ax.set_ylabel("validation loss (nats/token; o: mean of the islands' own models, with their views)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss_vs_tokens.png"), dpi=120)
    plt.close(fig)

    # validation loss vs bytes per token (log x), Pareto front marked
    # the model each run produces (assembled: global backbone + masters) where it was evaluated
    def produced(r):
        a = r["assembled_loss"]
        return (a, r["assembled_std"]) if a is not None and not math.isnan(a) else (r["val_loss"], r["val_loss_std"])
    pts = [(max(r["bytes_per_token"], 1e-3), produced(r)[0]) for r in rows]
    front = pareto(pts)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(rows):
        ax.errorbar(pts[i][0], pts[i][1], yerr=produced(r)[1] or None, fmt="o",
                    color="tab:red" if i in front else "tab:blue")
        ax.annotate(r["run"], pts[i], fontsize=7, xytext=(4, 3), textcoords="offset points")
    fp = sorted(pts[i] for i in front)
    ax.plot([p[0] for p in fp], [p[1] for p in fp], "--", color="tab:red", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent per token per learner (all tiers, log scale)")
    ax.set_ylabel("final validation loss of the model produced (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss_vs_bytes.png"), dpi=120)
    plt.close(fig)

    # bytes per tier, stacked per run
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows) + 2), 5))
    bottom = [0.0] * len(rows)
    for t in tiers:
        v = [r["tiers"].get(t, 0.0) for r in rows]
        ax.bar([r["run"] for r in rows], v, bottom=bottom, label=t,
               color=plt.cm.tab10(tiers.index(t) % 10))
        bottom = [b + x for b, x in zip(bottom, v)]
    ax.set_yscale("log")
    ax.set_ylabel("bytes sent per token per learner (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, title="tier")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bytes_by_tier.png"), dpi=120)
    plt.close(fig)

    # per-expert load over time, first MoE layer, of the last run
    name, seeds = list(data.items())[-1]
    s = seeds[0]
    if s["load"] is not None:
        load = s["load"][:, 0, :].astype(float)
        load /= load.sum(axis=1, keepdims=True).clip(min=1)
        fig, ax = plt.subplots(figsize=(8, 4))
        im = ax.imshow(load.T, aspect="auto", interpolation="nearest", origin="lower",
                       extent=[s["train_step"][0], s["train_step"][-1], -0.5, load.shape[1] - 0.5])
        fig.colorbar(im, ax=ax, label="share of routed tokens")
        ax.set_xlabel("step")
        ax.set_ylabel("expert (first MoE layer)")
        ax.set_title(f"{title}\nexpert load of run {name}", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "expert_load.png"), dpi=120)
        plt.close(fig)
    print(open(os.path.join(out, "table.md")).read())
    print(f"table and plots in {out}/")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "slurm", "table"):
        s = sub.add_parser(name)
        s.add_argument("sweep")
        s.add_argument("--out", default=os.path.join(ROOT, "runs", "sweeps"))
        if name == "run":
            s.add_argument("--dry-run", action="store_true", help="print the commands only")
        if name == "slurm":
            s.add_argument("--submit", action="store_true", help="run the sbatch lines too")
            s.add_argument("--sbatch", help="more sbatch options, one string: --sbatch=\"--cpus-per-task=1\"")
    a = p.parse_args()
    {"run": cmd_run, "slurm": cmd_slurm, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
