"""Attention rollout for divided space-time attention: a hand-computed case, the properties of
the per-block matrices, and the weights of a 1-block TimeSformer against a NumPy forward pass."""
import jax
import numpy as np
import pytest

from mmkd_jax import attention
from mmkd_jax.models import build_model


def hand_maps():
    """T=2 frames, a 1x2 patch grid, one head, one block (tokens: cls, (n0,t0), (n0,t1),
    (n1,t0), (n1,t1)). Temporal: uniform. Spatial: patches attend to themselves; frame 0's cls
    copy attends only to patch n0, frame 1's only to patch n1."""
    temporal = np.full((1, 2, 1, 2, 2), 0.5)  # (B, N, heads, T, T)
    spatial = np.zeros((1, 2, 1, 3, 3))  # (B, T, heads, 1+N, 1+N), order cls, n0, n1
    spatial[0, :, 0, 1, 1] = spatial[0, :, 0, 2, 2] = 1.0
    spatial[0, 0, 0, 0, 1] = 1.0
    spatial[0, 1, 0, 0, 2] = 1.0
    return [{"temporal": temporal, "spatial": spatial, "grid": (1, 2)}]


def test_hand_computed_case():
    # M_temporal: patch rows (A + I)/2 = [.75, .25] within a patch's two frames; cls row e0.
    # M_spatial cls row: (mean_t A[cls] + e0)/2 = [.5, .25 on (n0,t0), .25 on (n1,t1)].
    # cls row of M_spatial @ M_temporal: .5 e0 + .25 [.75, .25] on n0 + .25 [.25, .75] on n1
    #   = [.5, .1875, .0625, .0625, .1875]; patches renormalised: / .5.
    maps = hand_maps()
    m = attention.block_matrix(maps[0]["temporal"][0, :, 0], maps[0]["spatial"][0, :, 0])
    np.testing.assert_allclose(m[0], [0.5, 0.1875, 0.0625, 0.0625, 0.1875], atol=1e-12)
    out = attention.rollout(maps)
    assert out.shape == (1, 2, 1, 2)
    np.testing.assert_allclose(out[0], [[[0.375, 0.125]], [[0.125, 0.375]]], atol=1e-7)


def random_maps(rng, b=2, n=4, t=3, heads=2, depth=2, grid=(2, 2)):
    def stochastic(shape):  # softmax rows, as attention weights are
        z = np.exp(rng.normal(size=shape) * 2)
        return z / z.sum(-1, keepdims=True)

    return [{"temporal": stochastic((b, n, heads, t, t)),
             "spatial": stochastic((b, t, heads, n + 1, n + 1)), "grid": grid}
            for _ in range(depth)]


def loop_rollout(temporal_blocks, spatial_blocks):
    """Independent rollout: every matrix entry set by index arithmetic, full R = M_L ... M_1.

    temporal_blocks: per block (N, T, T); spatial_blocks: per block (T, 1+N, 1+N), heads
    averaged. Returns (T, N) relevance of the patch tokens, summing to 1.
    """
    n, t = temporal_blocks[0].shape[:2]
    size = 1 + n * t
    idx = lambda p, f: 1 + p * t + f
    r = np.eye(size)
    for tem, spa in zip(temporal_blocks, spatial_blocks):
        mt = np.zeros((size, size))
        mt[0, 0] = 1.0
        a = np.zeros((size, size))
        for p in range(n):
            for f in range(t):
                for g in range(t):
                    mt[idx(p, f), idx(p, g)] = 0.5 * (tem[p, f, g] + (f == g))
        for f in range(t):
            a[0, 0] += spa[f, 0, 0] / t
            for q in range(n):
                a[0, idx(q, f)] += spa[f, 0, 1 + q] / t
            for p in range(n):
                a[idx(p, f), 0] = spa[f, 1 + p, 0]
                for q in range(n):
                    a[idx(p, f), idx(q, f)] = spa[f, 1 + p, 1 + q]
        r = 0.5 * (a + np.eye(size)) @ mt @ r
    rel = np.array([[r[0, idx(p, f)] for p in range(n)] for f in range(t)])
    return rel / rel.sum()


def test_block_matrices_are_row_stochastic_and_rollout_matches_loops():
    maps = random_maps(np.random.default_rng(0))
    for block in maps:
        for clip in range(2):
            tem = block["temporal"][clip].mean(1)
            spa = block["spatial"][clip].mean(1)
            for m in (*attention.block_factors(tem, spa), attention.block_matrix(tem, spa)):
                assert m.shape == (13, 13) and m.min() >= 0
                np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-12)
    out = attention.rollout(maps)
    assert out.shape == (2, 3, 2, 2) and out.dtype == np.float32 and out.min() > 0
    np.testing.assert_allclose(out.sum((1, 2, 3)), 1.0, atol=1e-6)
    for clip in range(2):
        ref = loop_rollout([b["temporal"][clip].mean(1) for b in maps],
                           [b["spatial"][clip].mean(1) for b in maps])
        np.testing.assert_allclose(out[clip].reshape(3, 4), ref, atol=1e-7)


TINY = dict(name="timesformer", num_classes=5, num_frames=3, image_size=16, patch_size=8,
            hidden_size=16, depth=1, num_heads=2, mlp_dim=32)


def layer_norm(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps) * p["scale"] + p["bias"]


def numpy_attention(x, p, heads):
    """(..., L, D) -> weights (..., heads, L, L) and output (..., L, D) of layers.Attention."""
    d = x.shape[-1]
    qkv = (x @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(*x.shape[:-1], 3, heads, d // heads)
    q, k, v = (np.moveaxis(qkv[..., i, :, :], -2, -3) for i in range(3))  # (..., h, L, hd)
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(d // heads)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.moveaxis(w @ v, -3, -2).reshape(x.shape)
    return w, out @ p["proj"]["kernel"] + p["proj"]["bias"]


def numpy_block_weights(params, video, cfg):
    """Independent forward of the embedding and block 0's two attentions, one clip (float64)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    t, h, w, c = video.shape
    ps, d, heads = cfg["patch_size"], cfg["hidden_size"], cfg["num_heads"]
    gh, gw = h // ps, w // ps
    patches = video.reshape(t, gh, ps, gw, ps, c).transpose(0, 1, 3, 2, 4, 5)
    emb = patches.reshape(t, gh * gw, -1) @ p["patch_embed"]["kernel"].reshape(-1, d)
    emb = emb + p["patch_embed"]["bias"] + p["pos_embed"][0, 1:]
    tokens = emb.transpose(1, 0, 2) + p["time_embed"][0]  # (N, T, D): patch-major
    cls = p["cls"][0] + p["pos_embed"][0, :1]  # (1, D)
    blk = p["blocks_0"]
    w_t, out = numpy_attention(layer_norm(tokens, blk["norm_temporal"]), blk["temporal_attn"],
                               heads)
    tokens = tokens + out @ blk["temporal_fc"]["kernel"] + blk["temporal_fc"]["bias"]
    frames = np.concatenate([np.broadcast_to(cls, (t, 1, d)), tokens.transpose(1, 0, 2)], 1)
    w_s, _ = numpy_attention(layer_norm(frames, blk["norm1"]), blk["attn"], heads)
    return w_t, w_s  # (N, heads, T, T), (T, heads, 1+N, 1+N)


@pytest.mark.parametrize("remat", [False, True])
def test_model_weights_equal_a_numpy_forward(remat):
    module = build_model({**TINY, "remat": remat})
    rng = np.random.default_rng(1)
    video = rng.normal(size=(2, 3, 16, 16, 3)).astype(np.float32)
    # Random values for every parameter (shapes only from init): the zero-initialised
    # time_embed / temporal_fc would hide ordering mistakes.
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), video, train=False))
    params = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.5,
                          shapes["params"])
    (maps,) = attention.attention_maps(module, params, video)
    assert maps["temporal"].shape == (2, 4, 2, 3, 3) and maps["spatial"].shape == (2, 3, 2, 5, 5)
    out = attention.attention_rollout(module, params, video)
    for clip in range(2):
        w_t, w_s = numpy_block_weights(params, video[clip].astype(np.float64), TINY)
        np.testing.assert_allclose(maps["temporal"][clip], w_t, atol=1e-5)
        np.testing.assert_allclose(maps["spatial"][clip], w_s, atol=1e-5)
        ref = loop_rollout([w_t.mean(1)], [w_s.mean(1)])  # (T, N), N = 2x2 grid row-major
        np.testing.assert_allclose(out[clip].reshape(3, 4), ref, atol=1e-5)


def test_refuses_models_without_patch_attention():
    stlt = build_model({"name": "stlt", "variant": "tiny", "num_classes": 3, "num_frames": 4})
    with pytest.raises(ValueError, match="needs a TimeSformer"):
        attention.attention_maps(stlt, {}, np.zeros((1, 4, 16, 16, 3), np.float32))
