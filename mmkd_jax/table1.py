"""The paper's Table 1 in miniature: every row, both splits, several seeds, one command.

  python -m mmkd_jax.main --config=configs/table1.py --workdir=/tmp/mmkd/table1

Each row is an ordinary run of the one trainer (configs/baseline_*.py, omnivore.py, distill.py)
in its own sub-workdir, WORKDIR/<split>/seed<k>/<run>, written exactly as a run of its own
config file would write it; runs that share an architecture and a recipe (a row on both splits
and every seed, all the students) train together as one population. Teachers are evaluated
logit averages of the baselines of the same split and seed. Finished runs are reused, so an
interrupted table resumes where it stopped. Output: table1.md, table1.json, table1.png (the
table) and table1_curves.png (eval top-1 over training of the RGB baseline and the students)
in WORKDIR.
"""
from __future__ import annotations

import json
import os
import time

import ml_collections
import numpy as np
from absl import logging

from mmkd_jax.train import members as members_lib

# (row id, kind, modalities at inference, run config file, teacher members); in paper order.
ROWS = (
    ("baseline_rgb", "Baseline", "RGB frames", "baseline_rgb.py", None),
    ("baseline_layout", "Baseline", "Obj. detections", "baseline_layout.py", None),
    ("baseline_flow", "Baseline", "Optical flow", "baseline_flow.py", None),
    ("teacher_rgb_layout", "Teacher", "RGB frames & Obj. detections", "teacher.py",
     "rgb+layout"),
    ("student_rgb_layout", "Student", "RGB frames", "distill.py", "rgb+layout"),
    ("teacher_rgb_flow", "Teacher", "RGB frames & Optical flow", "teacher.py", "rgb+flow"),
    ("student_rgb_flow", "Student", "RGB frames", "distill.py", "rgb+flow"),
    ("teacher_rgb_flow_layout", "Teacher", "RGB frames & Optical flow & Obj. detections",
     "teacher.py", "rgb+flow+layout"),
    ("omnivore", "Omnivore", "RGB frames", "omnivore.py", None),
    ("student_rgb_flow_layout", "Student", "RGB frames", "distill.py", "rgb+flow+layout"),
)
SPLIT_NAMES = {"standard": "Something-Synthetic (standard)",
               "compositional": "Something-Synthetic (compositional)"}


def run_config(table: ml_collections.ConfigDict, row: tuple, preset: str,
               seed: int) -> ml_collections.ConfigDict:
    """The config of one row: its config file at the split's preset, plus the table's overrides."""
    row_id, _, _, config_file, teacher = row
    arg = preset + (f",teacher={teacher}" if teacher else "")
    cfg = members_lib.load_config_file(os.path.join(table.config_dir, config_file), arg)
    cfg.seed = seed
    members_lib.apply_overrides(cfg, table.overrides)
    for spec in cfg.teacher.members:
        # Members are this table's baselines of the same split and seed, trained as rows.
        spec.workdir = os.path.join("..", os.path.basename(spec.workdir))
        spec.overrides = ",".join(filter(None, [f"seed={seed}", table.overrides]))
    return cfg


def _finished(workdir: str) -> dict | None:
    path = os.path.join(workdir, members_lib.RESULTS_FILE)
    return json.load(open(path)) if os.path.exists(path) else None


def _stages() -> tuple[list[tuple[str, ...]], tuple[str, ...], tuple[str, ...]]:
    """(independent, students, teachers): row ids grouped into stages, each stage trained as one
    population (mmkd_jax/train/trainer.py) over both splits and all seeds. The independent
    stages (omnivore, the longest, first; then the three baselines) run side by side when there
    are workers; the students need the baselines (they are the teachers' members) and train
    together, so that each member runs once per batch for all the students of its split and
    seed; teachers (evaluation only) come last."""
    by_kind = lambda kind: tuple(r[0] for r in ROWS if r[1] == kind)
    independent = [by_kind("Omnivore")] + [(r,) for r in by_kind("Baseline")]
    return independent, by_kind("Student"), by_kind("Teacher")


def _chunks(items: list, size: int) -> list[list]:
    size = size if size > 0 else max(1, len(items))
    return [items[i:i + size] for i in range(0, len(items), size)]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The `table1` trainer: runs (or reuses) every row, then writes the table, JSON and plots."""
    from mmkd_jax.train import evaluate, trainer, workers

    rows = {r[0]: r for r in ROWS}
    done: dict = {}
    start = time.time()
    splits = [(sp, config.splits[sp]) for sp in ("standard", "compositional")
              if sp in config.splits]

    def todo(stage: tuple[str, ...]) -> list[tuple]:
        """(split, row, seed, config, workdir) of the stage's unfinished runs."""
        out = []
        for split, preset in splits:
            for row_id in stage:
                for seed in config.seeds:
                    wd = os.path.join(workdir, split, f"seed{seed}", row_id)
                    finished = _finished(wd)
                    if finished is not None:
                        logging.info("Table 1: reusing finished run %s", wd)
                        done[(split, row_id, seed)] = finished
                    else:
                        out.append((split, row_id, seed,
                                    run_config(config, rows[row_id], preset, seed), wd))
        return out

    def submit(pool, stage: tuple[str, ...]) -> list[tuple]:
        jobs = []
        for part in _chunks(todo(stage), int(config.get("population_size", 0))):
            logging.info("Table 1: one population of %s", ", ".join(
                f"{split}/seed{seed}/{row_id}" for split, row_id, seed, _, _ in part))
            jobs.append((part, workers.submit(pool, [(cfg, wd) for *_, cfg, wd in part],
                                              trainer.train_population)))
        return jobs

    def collect(jobs: list[tuple]) -> None:
        for part, future in jobs:
            for (split, row_id, seed, _, _), result in zip(part, future.result()):
                done[(split, row_id, seed)] = result

    independent, students, teachers = _stages()
    n = int(config.get("workers", 0)) or workers.default_workers(len(independent))
    pool = workers.pool(n)
    try:
        omnivore_jobs = submit(pool, independent[0])  # the longest: started first
        baseline_jobs = [job for stage in independent[1:] for job in submit(pool, stage)]
        collect(baseline_jobs)
        student_jobs = submit(pool, students)
        collect(omnivore_jobs + student_jobs)
    finally:
        if pool is not None:
            pool.shutdown()
    for split, row_id, seed, cfg, wd in todo(teachers):
        logging.info("Table 1: %s / seed %d / %s -> %s", split, seed, row_id, wd)
        done[(split, row_id, seed)] = evaluate.run(cfg, wd)
    results = {sp: {r[0]: [done[(sp, r[0], s)] for s in config.seeds] for r in ROWS}
               for sp, _ in splits}
    table = summarize({sp: {r: [x["final"] for x in xs] for r, xs in rows_.items()}
                       for sp, rows_ in results.items()})
    table["curves"] = curves(results)
    table["wall_time_s"] = time.time() - start
    table["seeds"] = list(config.seeds)
    write_outputs(table, workdir)
    print(open(os.path.join(workdir, "table1.md")).read(), flush=True)
    return table


# Rows whose eval top-1 over training is drawn (table1_curves.png): where the gain opens up.
CURVE_ROWS = ("baseline_rgb", "student_rgb_layout", "student_rgb_flow",
              "student_rgb_flow_layout")


def curves(results: dict) -> dict:
    """Eval top-1 over training epochs per split and row in CURVE_ROWS: mean and std over seeds
    at the eval epochs all seeds share."""
    out = {}
    for split, rows in results.items():
        for row_id in CURVE_ROWS:
            histories = [{round(h["epoch"], 6): h["top1"] for h in r.get("history", [])}
                         for r in rows[row_id]]
            epochs = sorted(set.intersection(*(set(h) for h in histories)))
            values = np.array([[h[e] for e in epochs] for h in histories], np.float64)
            out.setdefault(split, {})[row_id] = {
                "epoch": epochs, "mean": values.mean(0).tolist() if epochs else [],
                "std": values.std(0).tolist() if epochs else []}
    return out


def summarize(results: dict) -> dict:
    """Mean and std over seeds per (split, row, metric), the student gains and the claims."""
    cells = {}
    for split, rows in results.items():
        for row_id, finals in rows.items():
            for metric in ("top1", "top5"):
                values = np.array([f[metric] for f in finals], dtype=np.float64)
                cells.setdefault(split, {}).setdefault(row_id, {})[metric] = {
                    "mean": float(values.mean()), "std": float(values.std()),
                    "values": values.tolist()}
    return {"cells": cells, "claims": claims(cells)}


def claims(cells: dict) -> list[dict]:
    """The paper's five qualitative claims, each with its margin and the seed std it must beat."""
    def m(split, row, metric="top1"):
        return cells[split][row][metric]["mean"]

    def s(split, row, metric="top1"):
        return cells[split][row][metric]["std"]

    out = []

    def check(text, margin, noise):
        out.append({"claim": text, "margin": float(margin), "std": float(noise),
                    "holds": bool(margin > noise)})

    splits = [sp for sp in ("standard", "compositional") if sp in cells]
    teachers = [r[0] for r in ROWS if r[1] == "Teacher"]
    students = [r[0] for r in ROWS if r[1] == "Student"]
    for sp in splits:
        for t in teachers:
            check(f"{t} beats baseline_rgb ({sp})", m(sp, t) - m(sp, "baseline_rgb"),
                  max(s(sp, t), s(sp, "baseline_rgb")))
    for sp in splits:
        for st in students:
            check(f"{st} beats baseline_rgb ({sp})", m(sp, st) - m(sp, "baseline_rgb"),
                  max(s(sp, st), s(sp, "baseline_rgb")))
    if len(splits) == 2:
        for st in students:
            gain = {sp: m(sp, st) - m(sp, "baseline_rgb") for sp in splits}
            check(f"{st}: gain larger on compositional than standard",
                  gain["compositional"] - gain["standard"],
                  max(s(sp, r) for sp in splits for r in (st, "baseline_rgb")))
    for sp in splits:
        check(f"student_rgb_flow_layout beats omnivore ({sp})",
              m(sp, "student_rgb_flow_layout") - m(sp, "omnivore"),
              max(s(sp, "student_rgb_flow_layout"), s(sp, "omnivore")))
    if len(splits) == 2:
        drop = {r: m("standard", r) - m("compositional", r)
                for r in ("baseline_rgb", "baseline_layout", "baseline_flow")}
        for other in ("baseline_layout", "baseline_flow"):
            check(f"baseline_rgb loses more standard->compositional than {other}",
                  drop["baseline_rgb"] - drop[other],
                  max(s(sp, r) for sp in splits for r in ("baseline_rgb", other)))
    return out


def _cell(cells, split, row_id, metric, seeds) -> str:
    c = cells[split][row_id][metric]
    text = f"{c['mean']:.1f}" + (f" ± {c['std']:.1f}" if seeds > 1 else "")
    if row_id.startswith("student"):
        gain = c["mean"] - cells[split]["baseline_rgb"][metric]["mean"]
        text += f" <sub>{gain:+.1f}</sub>"
    return text


def markdown(table: dict) -> str:
    cells, seeds = table["cells"], len(table["seeds"])
    splits = [sp for sp in ("standard", "compositional") if sp in cells]
    head = "| Method | Modalities at inference | " + " | ".join(
        f"{SPLIT_NAMES[sp]} Top 1 | Top 5" for sp in splits) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(splits))]
    for row_id, kind, modalities, _, _ in ROWS:
        values = " | ".join(_cell(cells, sp, row_id, k, seeds)
                            for sp in splits for k in ("top1", "top5"))
        lines.append(f"| {kind} (`{row_id}`) | {modalities} | {values} |")
    lines += ["", f"Top-1/top-5 accuracy (%), mean ± std over seeds {table['seeds']}; "
              "student gain over the RGB baseline as subscript.", "",
              "| claim | margin (top-1 points) | seed std | holds |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} | {c['margin']:+.2f} | {c['std']:.2f} | "
              f"{'yes' if c['holds'] else '**no**'} |" for c in table["claims"]]
    return "\n".join(lines) + "\n"


def plot(table: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = table["cells"]
    splits = [sp for sp in ("standard", "compositional") if sp in cells]
    row_ids = [r[0] for r in ROWS]
    x = np.arange(len(row_ids))
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for i, sp in enumerate(splits):
        means = [cells[sp][r]["top1"]["mean"] for r in row_ids]
        stds = [cells[sp][r]["top1"]["std"] for r in row_ids]
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=SPLIT_NAMES[sp])
    ax.set_xticks(x, [r.replace("_", "\n", 1) for r in row_ids], fontsize=8)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Table 1 on the synthetic dataset (seeds {table['seeds']})")
    ax.set_ylim(0, 115)  # a band above 100% for the legend, clear of every bar
    ax.legend(loc="upper center", ncol=len(splits))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(table: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [sp for sp in ("standard", "compositional") if sp in table["curves"]]
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
    for ax, sp in zip(axes[0], splits):
        for row_id in CURVE_ROWS:
            c = table["curves"][sp][row_id]
            epoch, mean, std = (np.asarray(c[k]) for k in ("epoch", "mean", "std"))
            ax.plot(epoch, mean, marker="o", ms=3, label=row_id,
                    lw=2.5 if row_id == "baseline_rgb" else 1.5,
                    color="black" if row_id == "baseline_rgb" else None)
            ax.fill_between(epoch, mean - std, mean + std, alpha=0.15,
                            color="black" if row_id == "baseline_rgb" else None)
        ax.set_title(SPLIT_NAMES[sp])
        ax.set_xlabel("epoch")
        ax.set_ylabel("eval top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"RGB baseline and students during training (mean ± std over seeds "
                 f"{table['seeds']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(table: dict, workdir: str) -> None:
    with open(os.path.join(workdir, "table1.json"), "w") as f:
        json.dump(table, f, indent=2)
    with open(os.path.join(workdir, "table1.md"), "w") as f:
        f.write(markdown(table))
    plot(table, os.path.join(workdir, "table1.png"))
    if table.get("curves"):
        plot_curves(table, os.path.join(workdir, "table1_curves.png"))
