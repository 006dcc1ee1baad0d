"""AdamW with linear warm-up then linear decay to zero, and a weight-decay mask."""
from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import ml_collections
import optax


def schedule(peak_lr: float, total_steps: int, warmup_frac: float) -> optax.Schedule:
    """Linear warm-up from 0 over the first `warmup_frac` of steps, then linear decay to 0."""
    warmup = max(1, int(round(warmup_frac * total_steps)))
    decay = max(1, total_steps - warmup)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_lr, warmup),
         optax.linear_schedule(peak_lr, 0.0, decay)],
        boundaries=[warmup])


def path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def decay_mask(params, exclude: Sequence[str]):
    """True where weight decay applies: not 0/1-d (biases, norms) and no `exclude` match."""
    patterns = [re.compile(p) for p in exclude]

    def decays(path, leaf) -> bool:
        name = path_str(path)
        return leaf.ndim > 1 and not any(p.search(name) for p in patterns)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    lr = schedule(cfg.lr, total_steps, cfg.warmup_frac)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                    mask=lambda p: decay_mask(p, cfg.wd_exclude)),
    )
    return tx, lr
