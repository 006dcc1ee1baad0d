"""Evaluation: the single-view eval loop, and the `evaluate` trainer for teacher ensembles."""
from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from mmkd_jax.data import pipeline
from mmkd_jax.train import members as members_lib
from mmkd_jax.train import sharding, steps

PROTOCOL = "single view: 1 clip (segment midpoints) x 1 centre crop"


def eval_loop(step_fn, params, data_cfg: ml_collections.ConfigDict, keys: tuple,
              batch_size: int, mesh) -> dict:
    """Top-1/top-5 (%) over the whole eval split; padding examples are masked out."""
    totals = None
    for local in pipeline.eval_iterator(data_cfg, keys, batch_size,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count()):
        counts = step_fn(params, sharding.to_global(local, mesh))
        totals = counts if totals is None else jax.tree.map(np.add, totals, counts)
    totals = jax.tree.map(lambda x: float(np.asarray(x)), jax.device_get(totals))
    n = max(totals["count"], 1.0)
    return {"top1": 100.0 * totals["top1"] / n, "top5": 100.0 * totals["top5"] / n,
            "num_examples": int(totals["count"])}


def evaluate_teacher(members: list[tuple], data_cfg, batch_size: int, mesh) -> dict:
    eval_step = steps.make_eval_step(steps.ensemble_logits_fn(members))
    return eval_loop(eval_step, [p for _, p, _ in members], data_cfg, steps.member_keys(members),
                     batch_size, mesh)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The `evaluate` trainer: a logit-average teacher of trained members on the eval split."""
    from mmkd_jax.train import trainer  # members may need training: same trainer, no cycle

    os.makedirs(workdir, exist_ok=True)
    config = trainer.resolve_config(config)
    mesh = sharding.make_mesh()
    members_lib.ensure_trained(config, workdir, trainer.train_and_evaluate)
    members, infos = members_lib.load(config, workdir, sharding.replicated(mesh))
    start = time.time()
    result = evaluate_teacher(members, config.data, config.batch_size, mesh)
    logging.info("Teacher (%s) on %s/%s: top-1 %.2f top-5 %.2f (%d clips, %s)",
                 "+".join(i["name"] for i in infos), config.data.name, config.data.eval_split,
                 result["top1"], result["top5"], result["num_examples"], PROTOCOL)
    results = {"experiment": config.get("experiment", "teacher"), "kind": "teacher",
               "dataset": config.data.name, "split": config.data.eval_split,
               "protocol": PROTOCOL, "final": result, "eval_time_s": time.time() - start,
               "members": [{k: i[k] for k in ("name", "workdir", "step", "modality")}
                           | {"final": i["results"].get("final")} for i in infos]}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, members_lib.RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2)
    print_table(results_rows(infos, ("teacher", result)))
    return results


def results_rows(infos: list[dict], *extra: tuple[str, dict]) -> list[tuple[str, dict]]:
    rows = [(f"member {i['name']} ({i['modality']})", (i["results"] or {}).get("final") or {})
            for i in infos]
    return rows + list(extra)


def print_table(rows: list[tuple[str, dict]]) -> None:
    """A small eval table on stdout (and in the log): the user-facing summary of a run."""
    lines = [f"{'model':<32} {'top-1':>7} {'top-5':>7}", "-" * 48]
    for name, r in rows:
        lines.append(f"{name:<32} {r.get('top1', float('nan')):7.2f} "
                     f"{r.get('top5', float('nan')):7.2f}")
    text = "\n".join(lines)
    if jax.process_index() == 0:
        print(f"\nEval ({PROTOCOL}):\n{text}\n", flush=True)
