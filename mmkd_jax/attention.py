"""Attention rollout (Abnar & Zuidema 2020) for divided space-time attention (TimeSformer).

Which (frame, patch) of a clip does the classification token draw on? Rollout follows the
attention weights through the blocks, treating each residual connection as an equal-weight
identity: one attention layer with weights A (heads averaged) mixes the tokens by
`M = (A + I) / 2`, and the cls token's row of `M_L ... M_1` says how much each input token
contributed to it.

A divided block has two attention layers over the tokens `cls, (patch n, frame t)` (patch-major,
time-minor: token `1 + n*T + t`), so it contributes `M_spatial @ M_temporal`:
- temporal: each patch attends over its own T tokens; the cls token does not take part, so its
  row is the identity (exact: the block leaves cls untouched there);
- spatial: frame t's patches attend over that frame's patches and a copy of cls; all copies are
  the one incoming cls token, so weights on any copy go to the cls column. The cls output is the
  mean of its T per-frame outputs, so its row is the mean of the T per-frame cls rows (cls->cls
  weights averaged, cls->(n, t) weights divided by T).

What is approximated, as in ViT rollout: heads are averaged; the residual and the attention
branch get equal weight whatever their norms (the value/output projections, `temporal_fc`,
LayerNorms and the token-wise MLP are ignored). The result is the cls token's row restricted to
the patch tokens, renormalised to sum to 1 (its share on the input cls token is dropped).

    maps = attention_maps(model.module, model.params, clip[None])   # per-block weights
    relevance = rollout(maps)                                       # (B, T, H/p, W/p)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Per block: "temporal" (B, N, heads, T, T) and "spatial" (B, T, heads, 1+N, 1+N) softmax
# weights (rows sum to 1), and "grid" (H/p, W/p).
BlockMaps = dict[str, Any]


def _softmax_weights(qkv: jnp.ndarray, num_heads: int) -> jnp.ndarray:
    """The attention weights of `layers.Attention` from its fused qkv output (..., L, 3D)."""
    *batch, length, three_d = qkv.shape
    head_dim = three_d // (3 * num_heads)
    qkv = qkv.astype(jnp.float32).reshape(*batch, length, 3, num_heads, head_dim)
    q, k = qkv[..., 0, :, :], qkv[..., 1, :, :]
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) * head_dim ** -0.5
    return jax.nn.softmax(logits, axis=-1)


def attention_maps(module, params, video: jnp.ndarray) -> list[BlockMaps]:
    """Per-block attention weights of a TimeSformer on `video` (B, T, H, W, C), eval mode.

    No model change: the qkv projections' outputs are captured (`capture_intermediates`) and
    the weights recomputed from them exactly as `layers.Attention` does (softmax in float32).
    """
    if not hasattr(module, "num_heads") or not hasattr(module, "patch_size"):
        raise ValueError(f"attention rollout needs a TimeSformer, got {type(module).__name__}")
    # Captures are only recorded for blocks bound as submodules: unroll scanned/remat blocks
    # (same parameter layout, same outputs).
    module = module.clone(**{k: False for k in ("scan_layers", "remat")
                             if getattr(module, k, False)})
    is_qkv = lambda mdl, method: method == "__call__" and mdl.name == "qkv"

    @jax.jit
    def captured(params, video):
        _, state = module.apply({"params": params}, video, train=False,
                                capture_intermediates=is_qkv, mutable=["intermediates"])
        return state["intermediates"]

    inter = captured(params, video)
    b, t = video.shape[:2]
    gh, gw = video.shape[2] // module.patch_size, video.shape[3] // module.patch_size
    n, heads = gh * gw, module.num_heads
    maps = []
    for i in range(module.depth):
        block = inter[f"blocks_{i}"]
        temporal = _softmax_weights(block["temporal_attn"]["qkv"]["__call__"][0], heads)
        spatial = _softmax_weights(block["attn"]["qkv"]["__call__"][0], heads)
        maps.append({"temporal": np.asarray(temporal).reshape(b, n, heads, t, t),
                     "spatial": np.asarray(spatial).reshape(b, t, heads, n + 1, n + 1),
                     "grid": (gh, gw)})
    return maps


def block_factors(temporal: np.ndarray, spatial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One clip's head-averaged weights, temporal (N, T, T) and spatial (T, 1+N, 1+N) ->
    (M_spatial, M_temporal), each (1+N*T, 1+N*T), rows summing to 1."""
    n, t = temporal.shape[:2]
    size = 1 + n * t
    tok = 1 + np.arange(n)[:, None] * t + np.arange(t)[None, :]  # (N, T): token of (n, t)

    m_temporal = np.zeros((size, size))
    m_temporal[0, 0] = 1.0  # cls skips the temporal attention
    m_temporal[tok[:, :, None], tok[:, None, :]] = (temporal + np.eye(t)) / 2

    a = np.zeros((size, size))
    rows = tok.T  # (T, N): frame t's patch tokens, in the spatial attention's order
    a[rows, 0] = spatial[:, 1:, 0]
    a[rows[:, :, None], rows[:, None, :]] = spatial[:, 1:, 1:]
    a[0, 0] = spatial[:, 0, 0].mean()
    a[0, rows] = spatial[:, 0, 1:] / t
    m_spatial = (a + np.eye(size)) / 2
    return m_spatial, m_temporal


def block_matrix(temporal: np.ndarray, spatial: np.ndarray) -> np.ndarray:
    """The token mixing of one divided block (temporal first, then spatial)."""
    m_spatial, m_temporal = block_factors(temporal, spatial)
    return m_spatial @ m_temporal


def rollout(maps: Sequence[BlockMaps]) -> np.ndarray:
    """Per-block maps (`attention_maps`) -> float32 (B, T, H/p, W/p) relevance, each clip's
    summing to 1."""
    gh, gw = maps[0]["grid"]
    b, n, _, t, _ = maps[0]["temporal"].shape
    out = np.zeros((b, t, gh, gw), np.float32)
    for clip in range(b):
        # Only the cls row of M_L ... M_1 is needed: a row vector times each factor, last first.
        row = np.zeros(1 + n * t)
        row[0] = 1.0
        for block in reversed(maps):
            m_spatial, m_temporal = block_factors(block["temporal"][clip].mean(axis=1),
                                                  block["spatial"][clip].mean(axis=1))
            row = row @ m_spatial @ m_temporal
        patches = row[1:].reshape(n, t).T  # token 1 + n*T + t -> (t, n)
        out[clip] = (patches / patches.sum()).reshape(t, gh, gw)
    return out


def attention_rollout(module, params, video: jnp.ndarray) -> np.ndarray:
    """`rollout(attention_maps(...))`: video (B, T, H, W, C) -> (B, T, H/p, W/p)."""
    return rollout(attention_maps(module, params, video))
