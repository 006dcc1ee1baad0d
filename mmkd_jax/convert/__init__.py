"""Weight import: ImageNet ViT (big_vision npz, timm), Hugging Face TimeSformer, authors' STLT,
and this project's own checkpoints (fine-tuning a trained run on another dataset).

Every path reports missing and unused keys (`ConversionReport`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmkd_jax.convert import mmkd_checkpoint
from mmkd_jax.convert.hf_timesformer import read_hf, timesformer_from_hf
from mmkd_jax.convert.stlt_torch import stlt_from_torch
from mmkd_jax.convert.surgery import ConversionReport, load_into
from mmkd_jax.convert.vit import load_vit

Source = tuple[dict[str, np.ndarray], list[str]]  # (our-named params, unused checkpoint keys)

# kind -> (path, target module, label_names=this run's classes or None) -> source params in our
# naming.
INIT_SOURCES: dict[str, Callable[..., Source]] = {
    "vit_npz": lambda path, module, **_: load_vit("vit_npz", path, module.num_frames),
    "vit_timm": lambda path, module, **_: load_vit("vit_timm", path, module.num_frames),
    "hf_timesformer": lambda path, module, **_: read_hf(path)[:2],
    "checkpoint": lambda path, module, label_names=None: mmkd_checkpoint.load_source(
        path, label_names),
}
# Kinds in our own parameter names: they fit any model (STLT too), not only TimeSformer.
ANY_MODEL_KINDS = ("checkpoint",)


def init_from(kind: str, path: str, module: Any, params: Any, *,
              label_names: list[str] | None = None) -> tuple[Any, ConversionReport]:
    """Initialises a model's fresh `params` from a checkpoint of `kind`.

    Shapes come from `params`: `pos_embed` / `time_embed` are resampled, the patch kernel is
    adapted to the input channels, and a head with another class count keeps its fresh init
    (listed under `missing`). `label_names` (this run's classes) lets kind `checkpoint` also
    re-initialise a head of the same size whose classes differ. Accepts bare params or a
    {"params": ...} variables dict.
    """
    if kind not in INIT_SOURCES:
        raise ValueError(f"unknown init kind {kind!r}; known: {sorted(INIT_SOURCES)}")
    if kind not in ANY_MODEL_KINDS and not hasattr(module, "grid"):
        raise ValueError(f"init_from {kind} supports TimeSformer targets, not "
                         f"{type(module).__name__}")
    wrapped = isinstance(params, Mapping) and "params" in params
    source, unused = INIT_SOURCES[kind](path, module, label_names=label_names)
    new, report = load_into(source, params["params"] if wrapped else params, module, unused)
    return ({**params, "params": new} if wrapped else new), report


__all__ = ["ANY_MODEL_KINDS", "INIT_SOURCES", "ConversionReport", "init_from", "load_into",
           "stlt_from_torch", "timesformer_from_hf"]
