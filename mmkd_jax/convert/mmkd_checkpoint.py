"""This project's own checkpoints as a weight source (`config.model.init_from.kind=checkpoint`).

The path is a run's workdir (its best checkpoint by eval top-1), its `checkpoints/` dir (best
step) or one step dir `checkpoints/<step>`. Parameters keep our names, so every parameter whose
name and shape match is copied (TimeSformer embeddings of another grid or clip length are
resampled by `surgery.load_into`). The classification head is re-initialised when the label
maps differ: another class count, or the same count with other names or order (a copied head
would silently predict the wrong classes).
"""
from __future__ import annotations

import numpy as np
from absl import logging

from mmkd_jax.convert.naming import flatten


def resolve(path: str) -> tuple[str, int | None]:
    """A workdir, a checkpoints dir or a step dir -> (checkpoints dir, step or None = best).

    The same resolution as `predict` / `export` (one implementation, in mmkd_jax.inference).
    """
    from mmkd_jax.inference import resolve_checkpoint  # it imports no convert module: no cycle

    try:
        return resolve_checkpoint(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"init_from checkpoint: {e}") from e


def head_keys(flat: dict[str, np.ndarray], num_classes: int) -> list[str]:
    """Parameters of the classification layer: under a `head*` module, last dim = classes."""
    return sorted(k for k, v in flat.items()
                  if k.split("/")[0].startswith("head") and v.shape[-1:] == (num_classes,))


def load_source(path: str, label_names: list[str] | None = None
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    """(our-named params, unused keys) of a checkpoint; the head is left out (and listed as
    unused) when `label_names` (this run's classes) differ from the checkpoint's."""
    from mmkd_jax.train.checkpoint import Checkpointer  # orbax only when actually used

    ckpt_dir, step = resolve(path)
    ckpt = Checkpointer(ckpt_dir, read_only=True)
    step = ckpt.best_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"init_from checkpoint: no checkpoint step in {ckpt_dir}")
    meta = ckpt.restore_meta(step)
    flat = {k: np.asarray(v) for k, v in flatten(ckpt.restore_params(step)).items()}
    source_labels = list(meta.get("label_names") or [])
    logging.info("init_from checkpoint: %s step %d (experiment %s, %d classes)", ckpt_dir, step,
                 meta.get("experiment"), len(source_labels))
    unused: list[str] = []
    if label_names is not None and source_labels and source_labels != list(label_names):
        common = len(set(source_labels) & set(label_names))
        for key in head_keys(flat, len(source_labels)):
            flat.pop(key)
            unused.append(f"{key} (label maps differ: head re-initialised)")
        logging.info("init_from checkpoint: classes differ (checkpoint %d, this run %d, %d names "
                     "in common): head re-initialised", len(source_labels), len(label_names),
                     common)
    return flat, unused
