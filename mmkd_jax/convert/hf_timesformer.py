"""Hugging Face `TimesformerModel` / `TimesformerForVideoClassification` -> our TimeSformer.

Reads a `save_pretrained` directory (safetensors, sharded or not, or pytorch_model.bin) or an
in-memory state dict; safetensors needs neither torch nor transformers (config.json is read as
JSON). Inputs change layout: Hugging Face takes (B, T, C, H, W), we take (B, T, H, W, C).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmkd_jax.convert.naming import Rule, conv, rename, torch_layernorm, torch_linear
from mmkd_jax.convert.readers import as_state, load_hf_dir
from mmkd_jax.convert.surgery import load_into
from mmkd_jax.models.timesformer import TimeSformer

log = logging.getLogger(__name__)

_P = r"(?:timesformer\.)?"  # TimesformerForVideoClassification wraps the base model
_L = rf"{_P}encoder\.layer\.(\d+)"
HF_RULES = [
    Rule(rf"{_P}embeddings\.cls_token", "cls"),
    Rule(rf"{_P}embeddings\.position_embeddings", "pos_embed"),
    Rule(rf"{_P}embeddings\.time_embeddings", "time_embed"),
    Rule(rf"{_P}embeddings\.patch_embeddings\.projection\.weight", "patch_embed/kernel", conv),
    Rule(rf"{_P}embeddings\.patch_embeddings\.projection\.bias", "patch_embed/bias"),
    *torch_layernorm(r"blocks_\1/norm_temporal", rf"{_L}\.temporal_layernorm"),
    *torch_linear(r"blocks_\1/temporal_attn/qkv", rf"{_L}\.temporal_attention\.attention\.qkv"),
    *torch_linear(r"blocks_\1/temporal_attn/proj", rf"{_L}\.temporal_attention\.output\.dense"),
    *torch_linear(r"blocks_\1/temporal_fc", rf"{_L}\.temporal_dense"),
    *torch_layernorm(r"blocks_\1/norm1", rf"{_L}\.layernorm_before"),
    *torch_linear(r"blocks_\1/attn/qkv", rf"{_L}\.attention\.attention\.qkv"),
    *torch_linear(r"blocks_\1/attn/proj", rf"{_L}\.attention\.output\.dense"),
    *torch_layernorm(r"blocks_\1/norm2", rf"{_L}\.layernorm_after"),
    *torch_linear(r"blocks_\1/mlp/fc1", rf"{_L}\.intermediate\.dense"),
    *torch_linear(r"blocks_\1/mlp/fc2", rf"{_L}\.output\.dense"),
    *torch_layernorm("norm", rf"{_P}layernorm"),
    *torch_linear("head", "classifier"),
]


def _num_classes(state: Mapping[str, np.ndarray]) -> int:
    return int(state["classifier.weight"].shape[0]) if "classifier.weight" in state else 0


def config_to_kwargs(config: Mapping[str, Any], state: Mapping[str, np.ndarray]
                     ) -> dict[str, Any]:
    """A Hugging Face `TimesformerConfig` dict -> TimeSformer fields."""
    if config.get("attention_type", "divided_space_time") != "divided_space_time":
        raise NotImplementedError(f"attention_type {config['attention_type']!r} is not "
                                  "supported; only divided_space_time")
    if config.get("hidden_act", "gelu") != "gelu":
        raise NotImplementedError(f"hidden_act {config['hidden_act']!r}: only exact 'gelu'")
    return dict(
        hidden_size=config["hidden_size"], depth=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"], mlp_dim=config["intermediate_size"],
        image_size=config["image_size"], patch_size=config["patch_size"],
        in_channels=config.get("num_channels", 3), num_frames=config.get("num_frames", 8),
        layer_norm_eps=config.get("layer_norm_eps", 1e-6), qkv_bias=config.get("qkv_bias", True),
        drop_path_rate=float(config.get("drop_path_rate", 0.0)),
        dropout=float(config.get("hidden_dropout_prob", 0.0)),
        num_classes=_num_classes(state))


def infer_kwargs(source: Mapping[str, np.ndarray], state: Mapping[str, np.ndarray]
                 ) -> dict[str, Any]:
    """TimeSformer fields from weight shapes alone (no config.json); heads assume dim 64."""
    p, _, c, d = source["patch_embed/kernel"].shape
    grid = int(round(np.sqrt(source["pos_embed"].shape[1] - 1)))
    depth = 1 + max(int(m.group(1)) for k in source if (m := re.match(r"blocks_(\d+)/", k)))
    return dict(hidden_size=d, depth=depth, num_heads=max(d // 64, 1),
                mlp_dim=source["blocks_0/mlp/fc1/kernel"].shape[1], image_size=grid * p,
                patch_size=p, in_channels=c, num_frames=source["time_embed"].shape[1],
                qkv_bias="blocks_0/attn/qkv/bias" in source, num_classes=_num_classes(state))


def read_hf(path_or_state_dict: Any) -> tuple[dict, list[str], dict[str, Any]]:
    """(our-named params, unused keys, TimeSformer kwargs) from a HF checkpoint."""
    if isinstance(path_or_state_dict, Mapping):
        state, config = as_state(path_or_state_dict), None
    else:
        state, config = load_hf_dir(path_or_state_dict)
    source, unused = rename(state, HF_RULES)
    kwargs = config_to_kwargs(config, state) if config else infer_kwargs(source, state)
    return source, unused, kwargs


def timesformer_from_hf(path_or_state_dict: Any, *, strict: bool = True,
                        **overrides: Any) -> tuple[TimeSformer, Any]:
    """A Hugging Face TimeSformer checkpoint -> (TimeSformer module, params).

    `overrides` set module fields (e.g. `dtype`, `remat`, `num_heads` for a bare state dict,
    or `num_frames` / `image_size`, whose embeddings are then resampled). With `strict`, any
    parameter not found in the checkpoint raises; otherwise it keeps a fresh init (seed 0).
    """
    source, unused, kwargs = read_hf(path_or_state_dict)
    module = TimeSformer(**{**kwargs, **overrides})
    h, w = (module.image_size,) * 2 if np.isscalar(module.image_size) else module.image_size
    video = jnp.zeros((1, module.num_frames, h, w, module.in_channels), jnp.float32)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), video, train=False))["params"]
    params, report = load_into(source, shapes, module, unused)
    if report.missing:
        if strict:
            raise ValueError(f"checkpoint does not cover the model:\n{report}")
        init = module.init(jax.random.key(0), video, train=False)["params"]
        params, report = load_into(source, init, module, unused)
    log.info("timesformer_from_hf:\n%s", report)
    return module, params
