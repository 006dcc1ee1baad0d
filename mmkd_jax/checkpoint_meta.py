"""What a checkpoint says about itself: the JSON `meta` item saved with every checkpoint.

    {"format": 1, "experiment": "baseline_rgb", "step": 140,
     "config": {...the resolved run config: model architecture, modality, data, ...},
     "label_names": ["Pushing something from left to right", ...], "num_classes": 174,
     "preprocessing": {...how frames become the model's eval input, see `preprocessing`}}

Built here only (the trainer calls `build`), so `predict` / `export` / a copied checkpoint
folder need nothing else: no config file, no dataset. JAX/TF-free apart from the ImageNet
constants, which are read from the input pipeline when a meta is built.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mmkd_jax.models.registry import MODALITY_KEYS

META_FORMAT = 1
REQUIRED = ("format", "experiment", "config", "label_names", "num_classes", "preprocessing")
PREPROCESSING_REQUIRED = ("modality", "inputs", "num_frames", "image_size", "frame_sampling",
                          "spatial", "eval_views")

# The eval view in words; the same rules as mmkd_jax/data (docs/pipeline.md).
FRAME_SAMPLING = ("segment midpoints: seg=(L-1)/T, frame i = (round(seg*i) + round(seg*(i+1)))"
                  " // 2 (round half to even)")
SPATIAL = ("centre square of side min(H, W), bilinear resize to S x S (half-pixel centres, "
           "no antialiasing)")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else default


def eval_modality(modality: str) -> str:
    """The modality a model is evaluated on: omnivore models are evaluated on RGB."""
    return "rgb" if modality == "omni" else modality


def preprocessing(config: Any) -> dict:
    """How one video becomes the eval input of the model `config` trains (JSON-ready).

    Keys: modality, inputs (batch keys, in call order), num_frames, image_size, frame_sampling,
    spatial, eval_views; for image inputs also channels, scale, mean, std and layout; for flow
    the TSN encoding; for boxes num_boxes and their coordinates.
    """
    from mmkd_jax.data.color import IMAGENET_MEAN, IMAGENET_STD

    data = config["data"]
    modality = eval_modality(config["modality"])
    eval_cfg = _get(config, "eval") or {}
    out = {
        "modality": modality,
        "inputs": list(MODALITY_KEYS[modality]),
        "num_frames": int(data["num_frames"]),
        "image_size": int(data["image_size"]),
        "frame_sampling": FRAME_SAMPLING,
        "spatial": SPATIAL,
        "eval_views": {"num_clips": int(_get(eval_cfg, "num_clips", 1)),
                       "num_crops": int(_get(eval_cfg, "num_crops", 1))},
    }
    if modality in ("rgb", "flow"):
        channels = 3 if modality == "rgb" else int(data["flow_channels"])
        out.update({"channels": channels, "scale": "x / 255",
                    "mean": list(IMAGENET_MEAN[:channels]), "std": list(IMAGENET_STD[:channels]),
                    "layout": "(B, T, S, S, C) float32, channels last"})
    if modality == "rgb":
        out["color"] = "RGB"
    if modality == "flow":
        out["flow"] = ("TSN 8-bit x, y (+ (x+y)/2 when 3 channels): "
                       "round(255*(clip(v,-20,20)+20)/40); RGB frame i reads flow min(i, N-2)")
    if modality == "layout":
        out.update({"num_boxes": int(data["num_boxes"]),
                    "boxes": "(B, T, K, 4) x1,y1,x2,y2 in the crop's coordinates, in [0, 1]",
                    "categories": "(B, T, K) int32: 0 pad, 1 hand, 2 object"})
    return out


def build(config: Any, label_names: list[str], experiment: str) -> dict:
    """The meta dict of a run (the trainer adds "step" at each save)."""
    as_dict = json.loads(config.to_json_best_effort()) if hasattr(
        config, "to_json_best_effort") else json.loads(json.dumps(config))
    return {"format": META_FORMAT, "experiment": experiment, "config": as_dict,
            "label_names": list(label_names), "num_classes": len(label_names),
            "preprocessing": preprocessing(as_dict)}


def missing_fields(meta: Mapping) -> list[str]:
    """What a meta lacks to be used on its own ([] = complete)."""
    missing = [k for k in REQUIRED if k not in meta]
    pre = meta.get("preprocessing") or {}
    missing += [f"preprocessing.{k}" for k in PREPROCESSING_REQUIRED if k not in pre]
    config = meta.get("config") or {}
    missing += [f"config.{k}" for k in ("model", "modality", "data") if k not in config]
    if "label_names" in meta and len(meta["label_names"]) != meta.get("num_classes"):
        missing.append("num_classes (!= len(label_names))")
    return missing
