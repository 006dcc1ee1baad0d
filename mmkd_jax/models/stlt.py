"""STLT: spatial-temporal layout transformer on object boxes (Radevski et al., BMVC 2021).

Semantics follow the authors' code (gorjanradevski/revisiting-spatial-temporal-layouts,
`StltDataset` + `Stlt`): every frame gets a frame-cls box [0,0,1,1] with category `cls` before
its object boxes; a frame with no valid box is "empty", otherwise "regular"; an "extract" frame
(cls box only) is appended and the prediction is read at that position. Embedding LayerNorms use
the authors' eps 1e-12; transformer layers are PyTorch `TransformerEncoderLayer` (post-LN,
eps 1e-5, exact GELU).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mmkd_jax.models.layers import Attention, Dense, Mlp, gelu

# Category ids of the boxes (Something-Else): the model adds CLS itself.
CATEGORIES = {"pad": 0, "hand": 1, "object": 2, "cls": 3}
# Frame types of the temporal transformer. "start" exists in the authors' table but their
# Something-Something loader never emits it; neither do we.
FRAME_TYPES = {"pad": 0, "start": 1, "regular": 2, "empty": 3, "extract": 4}

VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, num_heads=2, mlp_dim=64, spatial_layers=1, temporal_layers=2,
                 num_frames=4, num_classes=10),
    # BMVC'21 paper / released checkpoints.
    "bmvc21": dict(hidden_size=768, num_heads=12, mlp_dim=3072, spatial_layers=4,
                   temporal_layers=8),
    # Layer counts and heads of the ICCV'23 distillation code (gorjanradevski/multimodal-
    # distillation) on the BMVC'21 architecture.
    "iccv23": dict(hidden_size=768, num_heads=8, mlp_dim=3072, spatial_layers=6,
                   temporal_layers=6),
}

_xavier = nn.initializers.xavier_uniform()
_embed_init = nn.initializers.normal(stddev=0.02)


def frame_types(categories: jnp.ndarray) -> jnp.ndarray:
    """(B, T, K) box categories -> (B, T + 1) frame types, the extract frame last."""
    has_boxes = jnp.any(categories != CATEGORIES["pad"], axis=-1)
    types = jnp.where(has_boxes, FRAME_TYPES["regular"], FRAME_TYPES["empty"])
    extract = jnp.full(types.shape[:1] + (1,), FRAME_TYPES["extract"], types.dtype)
    return jnp.concatenate([types, extract], axis=1).astype(jnp.int32)


class EncoderLayer(nn.Module):
    """PyTorch `TransformerEncoderLayer` (post-LN, GELU) with a boolean attention mask."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.1
    dtype: Any = jnp.float32
    matmul_dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, train: bool) -> jnp.ndarray:
        h = Attention(self.num_heads, attention_dropout=self.dropout, dropout=self.dropout,
                      dtype=self.dtype, matmul_dtype=self.matmul_dtype, kernel_init=_xavier,
                      name="attn")(x, mask=mask, train=train)
        x = nn.LayerNorm(1e-5, dtype=self.dtype, name="norm1")(x + h)
        h = Mlp(self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
                matmul_dtype=self.matmul_dtype, kernel_init=_xavier, name="mlp")(x, train=train)
        return nn.LayerNorm(1e-5, dtype=self.dtype, name="norm2")(x + h)


class STLT(nn.Module):
    """Boxes (B, T, K, 4) x1y1x2y2 in [0, 1] and categories (B, T, K) -> logits (B, C).

    `max_positions` sizes the frame-position table (default `num_frames + 1`, the extract frame
    included; the authors' checkpoints have 256 rows).
    """

    num_classes: int = 174
    num_frames: int = 8
    hidden_size: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    spatial_layers: int = 4
    temporal_layers: int = 8
    dropout: float = 0.1
    max_positions: int | None = None
    num_categories: int = 4
    layer_norm_eps: float = 1e-12
    dtype: Any = "float32"
    matmul_dtype: Any = None  # operands of the dense matmuls (None: dtype); models/matmul.py

    @nn.compact
    def __call__(self, boxes: jnp.ndarray, categories: jnp.ndarray, *, train: bool,
                 return_features: bool = False) -> jnp.ndarray:
        b, t, k, _ = boxes.shape
        d = self.hidden_size
        dtype = jnp.dtype(self.dtype)
        mm = self.matmul_dtype
        categories = categories.astype(jnp.int32)
        types = frame_types(categories)

        # Frame-cls box first in every frame, then an extract frame holding only the cls box.
        cls_box = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0, 1.0], boxes.dtype), (b, t + 1, 1, 4))
        cls_cat = jnp.full((b, t + 1, 1), CATEGORIES["cls"], jnp.int32)
        boxes = jnp.concatenate([boxes, jnp.zeros((b, 1, k, 4), boxes.dtype)], axis=1)
        categories = jnp.concatenate([categories, jnp.zeros((b, 1, k), jnp.int32)], axis=1)
        boxes = jnp.concatenate([cls_box, boxes], axis=2)  # (B, T+1, 1+K, 4)
        categories = jnp.concatenate([cls_cat, categories], axis=2)

        drop = nn.Dropout(self.dropout, deterministic=not train)
        x = nn.Embed(self.num_categories, d, embedding_init=_embed_init, dtype=dtype,
                     name="category_embed")(categories)
        x = x + Dense(d, dtype=dtype, matmul_dtype=mm, name="box_embed")(boxes.astype(dtype))
        x = drop(nn.LayerNorm(self.layer_norm_eps, dtype=dtype, name="box_norm")(x))

        # Spatial transformer per frame; padded boxes are masked out as keys.
        x = x.reshape(b * (t + 1), k + 1, d)
        key_mask = (categories != CATEGORIES["pad"]).reshape(b * (t + 1), 1, 1, k + 1)
        for i in range(self.spatial_layers):
            x = EncoderLayer(self.num_heads, self.mlp_dim, self.dropout, dtype, mm,
                             name=f"spatial_{i}")(x, key_mask, train)
        x = x[:, 0].reshape(b, t + 1, d)  # the frame-cls box token

        max_positions = self.max_positions or self.num_frames + 1
        if t + 1 > max_positions:
            raise ValueError(f"{t} frames + extract exceed max_positions={max_positions}")
        x = x + nn.Embed(max_positions, d, embedding_init=_embed_init, dtype=dtype,
                         name="position_embed")(jnp.arange(t + 1))
        x = x + nn.Embed(len(FRAME_TYPES), d, embedding_init=_embed_init, dtype=dtype,
                         name="frame_type_embed")(types)
        x = drop(nn.LayerNorm(self.layer_norm_eps, dtype=dtype, name="frame_norm")(x))

        causal = jnp.tril(jnp.ones((t + 1, t + 1), bool))
        for i in range(self.temporal_layers):
            x = EncoderLayer(self.num_heads, self.mlp_dim, self.dropout, dtype, mm,
                             name=f"temporal_{i}")(x, causal, train)
        feats = x[:, t]  # the extract frame
        if return_features:
            return feats.astype(jnp.float32)

        h = Dense(d, dtype=dtype, matmul_dtype=mm, name="head_fc1")(feats)
        h = nn.LayerNorm(self.layer_norm_eps, dtype=dtype, name="head_norm")(gelu(h))
        logits = Dense(self.num_classes, dtype=dtype, matmul_dtype=mm, name="head_fc2")(h)
        return logits.astype(jnp.float32)
