"""The authors' PyTorch STLT (gorjanradevski/revisiting-spatial-temporal-layouts) -> our STLT.

Their `Stlt` module names: `backbone.frames_embeddings.layout_embedding.{category_box_embeddings,
transformer.layers.i}`, `backbone.frames_embeddings.{position_embeddings, frame_type_embedding,
layer_norm}`, `backbone.transformer.layers.i`, `prediction_head.{fc1, layer_norm, fc2}`.
The unused `score_embeddings` (Action Genome only), the spatial transformer's template
`encoder_layer.*` and the `position_ids` buffer are reported as unused.

Only Something-Else layouts are representable: 4 box categories (pad, hand, object, cls) and no
detector scores. A checkpoint trained on Action Genome (one embedding per object class, 38, plus
score embeddings added to every box) is refused with what differs: converted, it would read
Something-Else category ids and silently give wrong logits.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmkd_jax.convert.naming import (
    Rule,
    linear,
    rename,
    strip_prefix,
    torch_layernorm,
    torch_linear,
)
from mmkd_jax.convert.readers import as_state
from mmkd_jax.convert.surgery import load_into
from mmkd_jax.models.stlt import CATEGORIES, STLT

log = logging.getLogger(__name__)

_FE = r"backbone\.frames_embeddings"
_CB = rf"{_FE}\.layout_embedding\.category_box_embeddings"


def _encoder_rules(ours: str, theirs: str) -> list[Rule]:
    """PyTorch `TransformerEncoderLayer` -> our EncoderLayer (fused in_proj = q, k, v)."""
    return [
        Rule(rf"{theirs}\.self_attn\.in_proj_weight", f"{ours}/attn/qkv/kernel", linear),
        Rule(rf"{theirs}\.self_attn\.in_proj_bias", f"{ours}/attn/qkv/bias"),
        *torch_linear(f"{ours}/attn/proj", rf"{theirs}\.self_attn\.out_proj"),
        *torch_linear(f"{ours}/mlp/fc1", rf"{theirs}\.linear1"),
        *torch_linear(f"{ours}/mlp/fc2", rf"{theirs}\.linear2"),
        *torch_layernorm(f"{ours}/norm1", rf"{theirs}\.norm1"),
        *torch_layernorm(f"{ours}/norm2", rf"{theirs}\.norm2"),
    ]


STLT_RULES = [
    Rule(rf"{_CB}\.category_embeddings\.weight", "category_embed/embedding"),
    *torch_linear("box_embed", rf"{_CB}\.box_embedding"),
    *torch_layernorm("box_norm", rf"{_CB}\.layer_norm"),
    *_encoder_rules(r"spatial_\1", rf"{_FE}\.layout_embedding\.transformer\.layers\.(\d+)"),
    Rule(rf"{_FE}\.position_embeddings\.weight", "position_embed/embedding"),
    Rule(rf"{_FE}\.frame_type_embedding\.weight", "frame_type_embed/embedding"),
    *torch_layernorm("frame_norm", rf"{_FE}\.layer_norm"),
    *_encoder_rules(r"temporal_\1", r"backbone\.transformer\.layers\.(\d+)"),
    *torch_linear("head_fc1", r"prediction_head\.fc1"),
    *torch_layernorm("head_norm", r"prediction_head\.layer_norm"),
    *torch_linear("head_fc2", r"prediction_head\.fc2"),
]


def _count(source: Mapping[str, np.ndarray], prefix: str) -> int:
    idx = [int(m.group(1)) for k in source if (m := re.match(rf"{prefix}_(\d+)/", k))]
    return 1 + max(idx) if idx else 0


def check_representable(source: Mapping[str, np.ndarray]) -> None:
    """Raises ValueError unless the checkpoint embeds the Something-Else box categories."""
    cats = source["category_embed/embedding"].shape[0]
    if cats != len(CATEGORIES):
        raise ValueError(
            f"STLT checkpoint has {cats} box-category embeddings; this STLT reads "
            f"Something-Else layouts with {len(CATEGORIES)} ({', '.join(CATEGORIES)}) and no "
            "detector scores. A checkpoint with one embedding per object class and score "
            "embeddings (Action Genome: 38 categories) cannot be represented; converting it "
            "would give wrong logits.")


def infer_kwargs(source: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """STLT fields from weight shapes; heads default to hidden // 64 (12 at 768, as BMVC'21)."""
    cats, d = source["category_embed/embedding"].shape
    return dict(hidden_size=d, num_heads=max(d // 64, 1), num_categories=cats,
                mlp_dim=source["spatial_0/mlp/fc1/kernel"].shape[1],
                spatial_layers=_count(source, "spatial"),
                temporal_layers=_count(source, "temporal"),
                max_positions=source["position_embed/embedding"].shape[0],
                num_classes=source["head_fc2/kernel"].shape[1])


def stlt_from_torch(state_dict: Any, *, strict: bool = True,
                    **model_kwargs: Any) -> tuple[STLT, Any]:
    """The authors' STLT state dict (or a file with it) -> (STLT module, params).

    Sizes come from the weights; `model_kwargs` override them (pass `num_heads`, which
    shapes cannot tell, when it is not hidden_size // 64, e.g. 8 for the ICCV'23 variant).
    """
    state = strip_prefix(as_state(state_dict), ["module."])
    source, unused = rename(state, STLT_RULES)
    check_representable(source)
    module = STLT(**{**infer_kwargs(source), **model_kwargs})
    t = module.num_frames
    boxes, cats = jnp.zeros((1, t, 1, 4)), jnp.zeros((1, t, 1), jnp.int32)
    init = lambda: module.init(jax.random.key(0), boxes, cats, train=False)["params"]
    params, report = load_into(source, jax.eval_shape(init), module, unused)
    if report.missing:
        if strict:
            raise ValueError(f"checkpoint does not cover the model:\n{report}")
        params, report = load_into(source, init(), module, unused)
    log.info("stlt_from_torch:\n%s", report)
    return module, params
