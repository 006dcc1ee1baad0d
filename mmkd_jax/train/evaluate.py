"""Evaluation: the eval loop (single view, or clips x crops with logits averaged per video), and
the `evaluate` trainer for teacher ensembles."""
from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from mmkd_jax.data import pipeline
from mmkd_jax.data.views import CROP_COUNTS
from mmkd_jax.train import members as members_lib
from mmkd_jax.train import sharding, steps

PROTOCOL = "single view: 1 clip (segment midpoints) x 1 centre crop"
# Rank of one example's entry per model key without a view axis (docs/architecture.md §2).
SINGLE_VIEW_RANK = {"rgb": 4, "flow": 4, "omni": 4, "boxes": 3, "categories": 2}


def views_of(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(num_clips, num_crops) of `config.eval`; (1, 1), the paper's protocol, when absent.

    Checked here, at start-up, rather than at the first eval an epoch later.
    """
    eval_cfg = config.get("eval") or {}
    clips, crops = int(eval_cfg.get("num_clips", 1)), int(eval_cfg.get("num_crops", 1))
    if clips < 1 or crops not in CROP_COUNTS:
        raise ValueError(f"config.eval.num_clips={clips} (>= 1), config.eval.num_crops={crops} "
                         f"(one of {CROP_COUNTS})")
    return clips, crops


def eval_batch_size(config: ml_collections.ConfigDict) -> int:
    """Videos per eval batch: `config.eval.batch_size`, or the training batch when 0/absent."""
    return int((config.get("eval") or {}).get("batch_size", 0) or config.batch_size)


def protocol(views: tuple[int, int] = (1, 1)) -> str:
    """The eval protocol in words, printed with every result and stored in results.json."""
    clips, crops = views
    if (clips, crops) == (1, 1):
        return PROTOCOL
    clip_words = "segment midpoints" if clips == 1 else "evenly spaced in each segment"
    crop_words = "centre crop" if crops == 1 else "crops (left/centre/right)"
    return (f"multi-view: {clips} clip{'s' if clips > 1 else ''} ({clip_words}) x {crops} "
            f"{crop_words}, logits averaged over {clips * crops} views")


def protocol_dict(views: tuple[int, int] = (1, 1)) -> dict:
    return {"num_clips": views[0], "num_crops": views[1], "num_views": views[0] * views[1],
            "description": protocol(views)}


def view_averaged(logits_fn):
    """Wraps `logits_fn(params, batch) -> (B, C)` for batches whose model keys may carry a view
    axis (B, V, ...): the V views of each video run as one batch of B * V clips and their logits
    are averaged per video, inside the caller's jit. Single-view batches pass through untouched.
    """

    def fn(params, batch):
        viewed = {k: x for k, x in batch.items()
                  if k in SINGLE_VIEW_RANK and x.ndim == SINGLE_VIEW_RANK[k] + 2}
        if not viewed:
            return logits_fn(params, batch)
        b, v = next(iter(viewed.values())).shape[:2]
        flat = {k: x.reshape((b * v,) + x.shape[2:]) for k, x in viewed.items()}
        logits = logits_fn(params, {**batch, **flat})
        return logits.reshape((b, v) + logits.shape[1:]).mean(axis=1)

    return fn


def _summed_counts(step_fn, params, data_cfg, keys: tuple, batch_size: int, mesh,
                   views: tuple[int, int]) -> dict:
    totals = None
    for local in pipeline.eval_iterator(data_cfg, keys, batch_size,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count(),
                                        num_clips=views[0], num_crops=views[1]):
        counts = step_fn(params, sharding.to_global(local, mesh))
        totals = counts if totals is None else jax.tree.map(np.add, totals, counts)
    return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(totals))


def _accuracy(totals: dict) -> dict:
    n = max(float(totals["count"]), 1.0)
    return {"top1": 100.0 * float(totals["top1"]) / n, "top5": 100.0 * float(totals["top5"]) / n,
            "num_examples": int(totals["count"])}


def eval_loop(step_fn, params, data_cfg: ml_collections.ConfigDict, keys: tuple,
              batch_size: int, mesh, views: tuple[int, int] = (1, 1)) -> dict:
    """Top-1/top-5 (%) over the whole eval split; padding examples are masked out.

    `views` = (num_clips, num_crops): with more than one view, batches carry a view axis and
    `step_fn` must average over it (build it from `view_averaged(logits_fn)`).
    """
    return _accuracy(_summed_counts(step_fn, params, data_cfg, keys, batch_size, mesh, views))


def population_eval_loop(step_fn, params, data_cfg: ml_collections.ConfigDict, keys: tuple,
                         batch_size: int, mesh, views: tuple[int, int] = (1, 1)) -> list[dict]:
    """`eval_loop` for K models in one pass over the split: `step_fn` returns counts with a
    leading member axis (steps.make_population_eval_step); one result dict per member."""
    totals = _summed_counts(step_fn, params, data_cfg, keys, batch_size, mesh, views)
    return [_accuracy({k: v[m] for k, v in totals.items()}) for m in range(len(totals["count"]))]


def evaluate_teacher(members: list[tuple], data_cfg, batch_size: int, mesh,
                     views: tuple[int, int] = (1, 1)) -> dict:
    eval_step = steps.make_eval_step(view_averaged(steps.ensemble_logits_fn(members)))
    return eval_loop(eval_step, [p for _, p, _ in members], data_cfg, steps.member_keys(members),
                     batch_size, mesh, views)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The `evaluate` trainer: a logit-average teacher of trained members on the eval split."""
    from mmkd_jax.train import trainer  # members may need training: same trainer, no cycle

    os.makedirs(workdir, exist_ok=True)
    config = trainer.resolve_config(config)
    mesh = sharding.make_mesh()
    members_lib.ensure_trained(config, workdir, trainer.train_and_evaluate)
    members, infos = members_lib.load(config, workdir, sharding.replicated(mesh))
    start = time.time()
    views = views_of(config)
    result = evaluate_teacher(members, config.data, eval_batch_size(config), mesh, views)
    logging.info("Teacher (%s) on %s/%s: top-1 %.2f top-5 %.2f (%d videos, %s)",
                 "+".join(i["name"] for i in infos), config.data.name, config.data.eval_split,
                 result["top1"], result["top5"], result["num_examples"], protocol(views))
    results = {"experiment": config.get("experiment", "teacher"), "kind": "teacher",
               "dataset": config.data.name, "split": config.data.eval_split,
               "protocol": protocol(views), "eval": protocol_dict(views), "final": result,
               "eval_time_s": time.time() - start,
               "members": [{k: i[k] for k in ("name", "workdir", "step", "modality")}
                           | {"final": i["results"].get("final")} for i in infos]}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, members_lib.RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2)
    print_table(results_rows(infos, ("teacher", result), views=views), protocol(views))
    return results


def results_rows(infos: list[dict], *extra: tuple[str, dict],
                 views: tuple[int, int] | None = None) -> list[tuple[str, dict]]:
    """Table rows: members' own final results, then `extra`. A member evaluated with other
    views than `views` (its own run's protocol) says so in its row."""
    rows = []
    for i in infos:
        results = i["results"] or {}
        name = f"member {i['name']} ({i['modality']}"
        own = results.get("eval") or {}
        own_views = (int(own.get("num_clips", 1)), int(own.get("num_crops", 1)))
        if views is not None and results and own_views != tuple(views):
            name += f", {own_views[0]}x{own_views[1]} eval"
        rows.append((name + ")", results.get("final") or {}))
    return rows + list(extra)


def print_table(rows: list[tuple[str, dict]], eval_protocol: str = PROTOCOL) -> None:
    """A small eval table on stdout (and in the log): the user-facing summary of a run."""
    lines = [f"{'model':<32} {'top-1':>7} {'top-5':>7}", "-" * 48]
    for name, r in rows:
        lines.append(f"{name:<32} {r.get('top1', float('nan')):7.2f} "
                     f"{r.get('top5', float('nan')):7.2f}")
    text = "\n".join(lines)
    if jax.process_index() == 0:
        print(f"\nEval ({eval_protocol}):\n{text}\n", flush=True)
