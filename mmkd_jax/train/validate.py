"""Config checks that run before anything is built: every count and size in range, by key.

No JAX or TF here, so `main` can refuse a bad command line in the time it takes to parse it.
"""
from __future__ import annotations

import math

import ml_collections


class ConfigError(ValueError):
    """A config value out of range; the message names the key and what it must be."""


# key -> (lowest allowed, lowest excluded?). (1, False) = a positive count.
_POSITIVE = (1, False)
_NONNEG = (0, False)
_ABOVE_ZERO = (0, True)
RANGES = {
    "batch_size": _POSITIVE, "accum_steps": _POSITIVE, "log_every_steps": _POSITIVE,
    "keep_checkpoints": _POSITIVE, "total_steps": _NONNEG,  # 0: from epochs
    "checkpoint_every_steps": _NONNEG,  # 0: at every eval
    "epochs": _ABOVE_ZERO, "eval_every_epochs": _ABOVE_ZERO,
    "data.image_size": _POSITIVE, "data.num_frames": _POSITIVE, "data.num_boxes": _POSITIVE,
    "data.flow_channels": _POSITIVE, "data.file_cycle_length": _POSITIVE,
    "data.shuffle_buffer": _POSITIVE, "data.prefetch": _NONNEG, "data.threads": _NONNEG,
    "data.num_shards": _NONNEG, "data.cache_decoded_gb": _NONNEG,
    "eval.batch_size": _NONNEG,  # 0: the training batch
    "eval.num_clips": _POSITIVE, "eval.num_crops": _POSITIVE,
    "optim.lr": _NONNEG,  # 0: a frozen run (checks a fine-tune set-up)
    "optim.eps": _ABOVE_ZERO, "optim.weight_decay": _NONNEG,
    "optim.warmup_frac": _NONNEG, "optim.clip_norm": _NONNEG,
    "distill.tau": _ABOVE_ZERO, "distill.w_kd": _NONNEG, "distill.w_gt": _NONNEG,
    "distill.mixup": _NONNEG, "teacher.train_workers": _NONNEG, "analysis.top_k": _POSITIVE,
    # Model sizes of every architecture (each config has the fields of its own model).
    "model.hidden_size": _POSITIVE, "model.depth": _POSITIVE, "model.num_heads": _POSITIVE,
    "model.mlp_dim": _POSITIVE, "model.patch_size": _POSITIVE, "model.image_size": _POSITIVE,
    "model.num_frames": _POSITIVE, "model.in_channels": _POSITIVE,
    "model.spatial_layers": _POSITIVE, "model.temporal_layers": _POSITIVE,
    "model.num_categories": _POSITIVE, "model.max_positions": _POSITIVE,
    "model.dropout": _NONNEG, "model.drop_path_rate": _NONNEG,
}
# Fractions: at most 1 (a probability or a share of the schedule).
AT_MOST_ONE = ("optim.warmup_frac", "model.dropout", "model.drop_path_rate")


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, (dict, ml_collections.ConfigDict)) or part not in node:
            return None
        node = node[part]
    return node


def check(config: ml_collections.ConfigDict | dict, prefix: str = "config") -> None:
    """Raises ConfigError naming the first key of RANGES whose value is out of range.

    Absent keys and None (a size left to the model, e.g. max_positions) are skipped.
    """
    for key, (low, exclusive) in RANGES.items():
        value = _get(config, key)
        if value is None:
            continue
        name = f"{prefix}.{key}={value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number.")
        if low == 1 and value != int(value):
            raise ConfigError(f"{name}: must be a whole number.")
        if not math.isfinite(value) or value < low or (exclusive and value == low):
            what = {_POSITIVE: "a positive whole number (at least 1)",
                    _NONNEG: "zero or more", _ABOVE_ZERO: "above zero"}[(low, exclusive)]
            raise ConfigError(f"{name}: must be {what}.")
        if key in AT_MOST_ONE and value > 1:
            raise ConfigError(f"{name}: must be at most 1.")
    parallel = _get(config, "data.num_parallel_calls")
    if parallel is not None and parallel != -1 and parallel < 1:
        raise ConfigError(f"{prefix}.data.num_parallel_calls={parallel!r}: must be -1 "
                          "(tf.data autotune) or a positive whole number.")
