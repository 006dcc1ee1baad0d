"""TimeSformer with divided space-time attention (Bertasius et al. 2021), channel-last input.

Numerics follow Hugging Face `TimesformerModel` (itself a port of facebookresearch/TimeSformer):
token order after `cls` is patch-major, time-minor; each block runs temporal attention over each
patch's T tokens (cls excluded) -> `temporal_fc` -> residual, then spatial attention per frame
with a copy of cls per frame (cls outputs averaged over frames), then the MLP.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmkd_jax.models.layers import Attention, Dense, DropPath, Mlp, trunc_normal

# Named sizes (ViT widths); patch size is part of the name as in big_vision / timm.
VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, depth=2, num_heads=2, mlp_dim=64, patch_size=8, image_size=32,
                 num_frames=4, num_classes=10),
    "Ti/16": dict(hidden_size=192, depth=12, num_heads=3, mlp_dim=768, patch_size=16),
    "S/16": dict(hidden_size=384, depth=12, num_heads=6, mlp_dim=1536, patch_size=16),
    "B/16": dict(hidden_size=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16),
    "L/16": dict(hidden_size=1024, depth=24, num_heads=16, mlp_dim=4096, patch_size=16),
}


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of PyTorch `interpolate(mode="nearest")` (float32 scale, floor)."""
    if in_size == out_size:
        return np.arange(out_size)
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def pair(x) -> tuple[int, int]:
    return (int(x), int(x)) if np.isscalar(x) else (int(x[0]), int(x[1]))


class Block(nn.Module):
    """One divided space-time block on tokens (B, 1 + N*T, D)."""

    num_heads: int
    mlp_dim: int
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    drop_path: float = 0.0
    dropout: float = 0.0
    attention: str = "xla"
    dtype: Any = jnp.float32
    matmul_dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, num_frames: int, train: bool) -> jnp.ndarray:
        b, length, d = x.shape
        t = num_frames
        n = (length - 1) // t
        norm = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)
        attn = lambda name: Attention(self.num_heads, qkv_bias=self.qkv_bias,
                                      dropout=self.dropout, impl=self.attention,
                                      dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                                      name=name)
        drop_path = DropPath(self.drop_path)
        cls, patches = x[:, :1], x[:, 1:]

        # Temporal attention over each patch's T tokens; cls does not take part.
        h = norm("norm_temporal")(patches).reshape(b * n, t, d)
        h = attn("temporal_attn")(h, train=train).reshape(b, n * t, d)
        # Reference order: drop-path on the attention output, then temporal_fc.
        h = Dense(d, dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                  kernel_init=nn.initializers.zeros, name="temporal_fc")(
                      drop_path(h, train=train))
        patches = patches + h

        # Spatial attention per frame, each frame with its own copy of cls.
        s = patches.reshape(b, n, t, d).transpose(0, 2, 1, 3)  # (B, T, N, D)
        s = jnp.concatenate([jnp.broadcast_to(cls[:, None], (b, t, 1, d)), s], axis=2)
        h = attn("attn")(norm("norm1")(s).reshape(b * t, n + 1, d), train=train)
        h = drop_path(h.reshape(b, t, n + 1, d), train=train)
        cls = cls + jnp.mean(h[:, :, :1], axis=1)  # cls outputs averaged over frames
        patches = patches + h[:, :, 1:].transpose(0, 2, 1, 3).reshape(b, n * t, d)

        x = jnp.concatenate([cls, patches], axis=1)
        h = Mlp(self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
                matmul_dtype=self.matmul_dtype, name="mlp")(
            norm("norm2")(x), train=train)
        return x + drop_path(h, train=train)


class TimeSformer(nn.Module):
    """Video (B, T, H, W, C) -> logits (B, num_classes), float32.

    `num_frames` and `image_size` size `time_embed` and `pos_embed`; other clip lengths and
    resolutions are accepted and the embeddings are resampled (nearest, as Hugging Face does).
    `num_classes=0` drops the head (`__call__` then returns features).
    """

    num_classes: int = 174
    num_frames: int = 8
    image_size: Any = 224
    patch_size: int = 16
    in_channels: int = 3
    hidden_size: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    dropout: float = 0.0
    dtype: Any = "float32"
    # Operands of every dense matmul (None, "": dtype). "bfloat16" with dtype float32 is mixed
    # precision, PyTorch-autocast style, and the fast mode on CPUs (models/matmul.py).
    matmul_dtype: Any = None
    remat: bool = False
    attention: str = "xla"
    scan_layers: bool = False  # the blocks as one lax.scan: one compiled block, not `depth`

    @property
    def grid(self) -> tuple[int, int]:
        h, w = pair(self.image_size)
        return h // self.patch_size, w // self.patch_size

    @nn.compact
    def __call__(self, video: jnp.ndarray, *, train: bool,
                 return_features: bool = False) -> jnp.ndarray:
        b, t, height, width, c = video.shape
        if c != self.in_channels:
            raise ValueError(f"TimeSformer expects {self.in_channels} channels, got {c}")
        d, p = self.hidden_size, self.patch_size
        dtype = jnp.dtype(self.dtype)

        x = video.reshape(b * t, height, width, c).astype(dtype)
        x = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
                    name="patch_embed")(x)
        gh, gw = x.shape[1:3]
        n = gh * gw
        x = x.reshape(b * t, n, d)

        cls = self.param("cls", trunc_normal(), (1, 1, d), jnp.float32)
        pos = self.param("pos_embed", trunc_normal(), (1, 1 + self.grid[0] * self.grid[1], d),
                         jnp.float32)
        time = self.param("time_embed", nn.initializers.zeros, (1, self.num_frames, d),
                          jnp.float32)
        pos_patches = pos[:, 1:]
        if (gh, gw) != self.grid:
            rows = nearest_indices(self.grid[0], gh)
            cols = nearest_indices(self.grid[1], gw)
            grid_pos = pos_patches.reshape(self.grid + (d,))
            pos_patches = grid_pos[rows][:, cols].reshape(1, n, d)
        if t != self.num_frames:
            time = time[:, nearest_indices(self.num_frames, t)]

        drop = nn.Dropout(self.dropout, deterministic=not train)
        x = drop(x + pos_patches.astype(dtype))
        cls_tok = drop((cls + pos[:, :1]).astype(dtype))  # identical for every frame
        # Patch-major, time-minor order: (B, T, N, D) -> (B, N, T, D).
        x = x.reshape(b, t, n, d).transpose(0, 2, 1, 3) + time[:, None].astype(dtype)
        x = drop(x).reshape(b, n * t, d)
        x = jnp.concatenate([jnp.broadcast_to(cls_tok, (b, 1, d)), x], axis=1)

        block_args = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, qkv_bias=self.qkv_bias,
                          layer_norm_eps=self.layer_norm_eps, dropout=self.dropout,
                          attention=self.attention, dtype=dtype,
                          matmul_dtype=self.matmul_dtype)
        rates = np.linspace(0.0, self.drop_path_rate, self.depth)  # linear stochastic depth
        if self.scan_layers and not self.is_initializing():
            x = self._scan_blocks(x, t, train, rates, block_args)
        else:
            block_cls = nn.remat(Block, static_argnums=(2, 3)) if self.remat else Block
            for i in range(self.depth):
                x = block_cls(**block_args, drop_path=float(rates[i]), name=f"blocks_{i}")(
                    x, t, train)

        feats = nn.LayerNorm(self.layer_norm_eps, dtype=dtype, name="norm")(x[:, 0])
        if return_features or self.num_classes == 0:
            return feats.astype(jnp.float32)
        logits = Dense(self.num_classes, dtype=dtype, matmul_dtype=self.matmul_dtype,
                       kernel_init=trunc_normal(), name="head")(feats)
        return logits.astype(jnp.float32)

    def _scan_blocks(self, x: jnp.ndarray, t: int, train: bool, rates: np.ndarray,
                     block_args: dict) -> jnp.ndarray:
        """The blocks as one `lax.scan`: XLA compiles one block instead of `depth` copies.

        Parameters keep their per-block layout (`blocks_i`, so converters and checkpoints are
        unchanged) and are stacked here, a copy of the block weights per step. Dropout and
        drop-path draw from per-block keys split off one "dropout" key, so in training the
        random masks differ from the unrolled model's (same distribution); without them the
        outputs match it (tests/test_perf_numerics.py).
        """
        params = self.variables["params"]
        stacked = jax.tree.map(lambda *p: jnp.stack(p),
                               *[params[f"blocks_{i}"] for i in range(self.depth)])
        stochastic = train and (self.dropout > 0 or self.drop_path_rate > 0)
        keys = jax.random.split(self.make_rng("dropout") if stochastic else jax.random.key(0),
                                self.depth)
        # A Python 0.0 lets DropPath skip itself; otherwise each block reads its traced rate.
        scanned_rates = jnp.asarray(rates, jnp.float32) if self.drop_path_rate > 0 else None

        def body(h, xs):
            p, key, rate = xs
            block = Block(**block_args, drop_path=0.0 if rate is None else rate, parent=None)
            return block.apply({"params": p}, h, t, train, rngs={"dropout": key}), None

        if self.remat:
            body = jax.checkpoint(body)
        x, _ = jax.lax.scan(body, x, (stacked, keys, scanned_rates))
        return x
