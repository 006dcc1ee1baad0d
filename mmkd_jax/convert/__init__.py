"""Weight import: ImageNet ViT (big_vision npz, timm), Hugging Face TimeSformer, authors' STLT.

Every path reports missing and unused keys (`ConversionReport`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmkd_jax.convert.hf_timesformer import read_hf, timesformer_from_hf
from mmkd_jax.convert.stlt_torch import stlt_from_torch
from mmkd_jax.convert.surgery import ConversionReport, load_into
from mmkd_jax.convert.vit import load_vit

Source = tuple[dict[str, np.ndarray], list[str]]  # (our-named params, unused checkpoint keys)

# kind -> (path, target module) -> source params in our naming.
INIT_SOURCES: dict[str, Callable[[str, Any], Source]] = {
    "vit_npz": lambda path, module: load_vit("vit_npz", path, module.num_frames),
    "vit_timm": lambda path, module: load_vit("vit_timm", path, module.num_frames),
    "hf_timesformer": lambda path, module: read_hf(path)[:2],
}


def init_from(kind: str, path: str, module: Any, params: Any) -> tuple[Any, ConversionReport]:
    """Initialises a TimeSformer's fresh `params` from a checkpoint of `kind`.

    Shapes come from `params`: `pos_embed` / `time_embed` are resampled, the patch kernel is
    adapted to the input channels, and a head with another class count keeps its fresh init
    (listed under `missing`). Accepts bare params or a {"params": ...} variables dict.
    """
    if kind not in INIT_SOURCES:
        raise ValueError(f"unknown init kind {kind!r}; known: {sorted(INIT_SOURCES)}")
    if not hasattr(module, "grid"):
        raise ValueError(f"init_from supports TimeSformer targets, not {type(module).__name__}")
    wrapped = isinstance(params, Mapping) and "params" in params
    source, unused = INIT_SOURCES[kind](path, module)
    new, report = load_into(source, params["params"] if wrapped else params, module, unused)
    return ({**params, "params": new} if wrapped else new), report


__all__ = ["INIT_SOURCES", "ConversionReport", "init_from", "load_into", "stlt_from_torch",
           "timesformer_from_hf"]
