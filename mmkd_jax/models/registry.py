"""Model registry: `build_model(model_cfg)` and the batch keys each modality reads."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from mmkd_jax.models import stlt, timesformer, vit

# name -> (module class, named variants).
MODELS: dict[str, tuple[type[nn.Module], dict[str, dict[str, Any]]]] = {
    "timesformer": (timesformer.TimeSformer, timesformer.VARIANTS),
    "stlt": (stlt.STLT, stlt.VARIANTS),
    "vit": (vit.ViT, vit.VARIANTS),  # image model of pretraining (mmkd_jax/train/pretrain.py)
}

MODALITY_KEYS: dict[str, tuple[str, ...]] = {
    "rgb": ("rgb",),
    "flow": ("flow",),
    "layout": ("boxes", "categories"),
    "omni": ("omni",),
}

# Keys a model config may carry that are not architecture fields (read by the trainer).
_NON_ARCH_KEYS = ("name", "variant", "init_from", "modality")


def _as_dict(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, "to_dict"):  # ml_collections.ConfigDict
        return cfg.to_dict()
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"model config must be a dict or ConfigDict, got {type(cfg).__name__}")


def build_model(model_cfg: Any) -> nn.Module:
    """Builds `MODELS[cfg.name]` from `cfg.variant` overridden by the other fields.

    Raises ValueError naming any key the model does not have.
    """
    cfg = _as_dict(model_cfg)
    name = cfg.get("name")
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
    cls, variants = MODELS[name]
    kwargs: dict[str, Any] = {}
    variant = cfg.get("variant")
    if variant is not None:
        if variant not in variants:
            raise ValueError(f"unknown {name} variant {variant!r}; known: {sorted(variants)}")
        kwargs.update(variants[variant])
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    for key, value in cfg.items():
        if key in _NON_ARCH_KEYS:
            continue
        if key not in fields:
            raise ValueError(f"unknown key {key!r} in {name} model config; "
                             f"allowed: {sorted(fields)}")
        kwargs[key] = value
    return cls(**kwargs)


def model_inputs(modality: str, batch: Mapping[str, Any]) -> tuple:
    """The positional inputs a model of `modality` takes from `batch`."""
    if modality not in MODALITY_KEYS:
        raise ValueError(f"unknown modality {modality!r}; known: {sorted(MODALITY_KEYS)}")
    return tuple(batch[k] for k in MODALITY_KEYS[modality])
