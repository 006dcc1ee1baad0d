"""Image ViT (Dosovitskiy et al. 2021), channel-last, in TimeSformer's parameter names.

The image model that pretraining trains (mmkd_jax/train/pretrain.py). Its parameters carry the
names of TimeSformer's spatial half (`patch_embed`, `cls`, `pos_embed`, `blocks_i/{norm1, attn,
norm2, mlp}`, `norm`, `head`), so it is exported as a big_vision ViT checkpoint and inflated into
a TimeSformer by the same converter as an ImageNet ViT (mmkd_jax/convert/vit.py).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mmkd_jax.models.layers import Attention, Dense, Mlp, trunc_normal
from mmkd_jax.models.timesformer import VARIANTS as _VIDEO_VARIANTS
from mmkd_jax.models.timesformer import pair

# TimeSformer's named widths, so that a ViT variant inflates into the TimeSformer of that name.
VARIANTS: dict[str, dict[str, Any]] = {
    name: {k: v for k, v in fields.items() if k != "num_frames"}
    for name, fields in _VIDEO_VARIANTS.items()}


class ViTBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)
        x = x + Attention(self.num_heads, qkv_bias=self.qkv_bias, dtype=self.dtype,
                          name="attn")(norm("norm1")(x), train=train)
        return x + Mlp(self.mlp_dim, dtype=self.dtype, name="mlp")(norm("norm2")(x), train=train)


class ViT(nn.Module):
    """Image (B, H, W, C) -> logits (B, num_classes) float32; `return_features` gives the
    final-norm cls token (what a TimeSformer inflated from it returns for a static clip)."""

    num_classes: int = 1000
    image_size: Any = 224
    patch_size: int = 16
    in_channels: int = 3
    hidden_size: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    dtype: Any = "float32"

    @nn.compact
    def __call__(self, image: jnp.ndarray, *, train: bool,
                 return_features: bool = False) -> jnp.ndarray:
        b, height, width, c = image.shape
        if c != self.in_channels:
            raise ValueError(f"ViT expects {self.in_channels} channels, got {c}")
        if (height, width) != pair(self.image_size):
            raise ValueError(f"ViT expects {pair(self.image_size)} images, got "
                             f"{(height, width)}")
        d, p, dtype = self.hidden_size, self.patch_size, jnp.dtype(self.dtype)
        x = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
                    name="patch_embed")(image.astype(dtype))
        x = x.reshape(b, -1, d)
        cls = self.param("cls", trunc_normal(), (1, 1, d), jnp.float32)
        pos = self.param("pos_embed", trunc_normal(), (1, 1 + x.shape[1], d), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(dtype), x], axis=1)
        x = x + pos.astype(dtype)
        for i in range(self.depth):
            x = ViTBlock(self.num_heads, self.mlp_dim, self.qkv_bias, self.layer_norm_eps,
                         dtype, name=f"blocks_{i}")(x, train)
        feats = nn.LayerNorm(self.layer_norm_eps, dtype=dtype, name="norm")(x[:, 0])
        if return_features or self.num_classes == 0:
            return feats.astype(jnp.float32)
        logits = Dense(self.num_classes, dtype=dtype, kernel_init=trunc_normal(),
                       name="head")(feats)
        return logits.astype(jnp.float32)
