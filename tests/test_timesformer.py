"""TimeSformer: sizes, config validation, attention paths, bf16, remat, drop-path, resampling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmkd_jax.models import TimeSformer, build_model
from mmkd_jax.models.layers import DropPath

B, T, S, C = 2, 4, 32, 3
# Dropout keys in the jitted tests use impl="rbg": it compiles several times faster than the
# default threefry on CPU and is the same "dropout" stream.


def _count(module, t=8, s=224, c=3):
    shapes = jax.eval_shape(lambda: module.init(
        jax.random.key(0), jnp.zeros((1, t, s, s, c)), train=False))
    return sum(x.size for x in jax.tree.leaves(shapes))


def _formula(d, depth, mlp, classes=174, t=8, s=224, p=16, c=3):
    block = 6 * d + 2 * (3 * d * d + 3 * d + d * d + d) + (d * d + d) + 2 * d * mlp + mlp + d
    return p * p * c * d + d + d + (1 + (s // p) ** 2) * d + t * d + depth * block + 2 * d \
        + d * classes + classes


@pytest.mark.parametrize("variant,d,depth,mlp", [
    ("Ti/16", 192, 12, 768), ("S/16", 384, 12, 1536), ("B/16", 768, 12, 3072),
    ("L/16", 1024, 24, 4096)])
def test_named_variants_param_counts(variant, d, depth, mlp):
    count = _count(build_model({"name": "timesformer", "variant": variant}))
    assert count == _formula(d, depth, mlp)
    if variant == "B/16":
        assert count == 121_392_558  # the number docs/models.md states (8 x 224, 174 classes)


def test_unknown_keys_and_variants_are_named():
    with pytest.raises(ValueError, match="'hidden_dim'"):
        build_model({"name": "timesformer", "variant": "tiny", "hidden_dim": 3})
    with pytest.raises(ValueError, match="'XL/16'"):
        build_model({"name": "timesformer", "variant": "XL/16"})
    with pytest.raises(ValueError, match="'vivit'"):
        build_model({"name": "vivit"})
    model = build_model({"name": "timesformer", "variant": "tiny", "depth": 3, "dtype":
                         "bfloat16", "init_from": {"kind": "", "path": ""}})
    assert (model.depth, model.hidden_size, model.dtype) == (3, 32, "bfloat16")


def _fake_init(module, video, seed=0, std=0.2):
    """Random params shaped like `module.init`, LayerNorm scales around 1; eval_shape + numpy
    avoids compiling every initialiser (seconds per model on CPU)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), video, train=False))
    rng = np.random.default_rng(seed)
    draw = lambda path, s: (jax.tree_util.keystr(path).endswith("['scale']")
                            + std * rng.normal(size=s.shape)).astype(np.float32)
    return jax.tree_util.tree_map_with_path(draw, shapes["params"])


@pytest.fixture(scope="module")
def tiny():
    """Tiny TimeSformer with drop-path, random params (temporal branch non-zero), a clip."""
    model = build_model({"name": "timesformer", "variant": "tiny", "drop_path_rate": 0.5})
    video = np.random.default_rng(0).normal(size=(B, T, S, S, C)).astype(np.float32)
    return model, _fake_init(model, video), video


def _logits(model, params, video, **kw):
    return jax.jit(lambda p, x: model.apply({"params": p}, x, train=False, **kw))(params, video)


def test_dot_product_attention_matches_xla(tiny):
    model, params, video = tiny
    ref = _logits(model, params, video)
    got = _logits(model.clone(attention="dot_product_attention"), params, video)
    assert np.max(np.abs(got - ref)) < 1e-5


def test_bfloat16_compute_with_float32_params(tiny):
    model, params, video = tiny
    ref = _logits(model, params, video)
    bf16 = model.clone(dtype="bfloat16")
    got = _logits(bf16, params, video)
    assert got.dtype == jnp.float32
    assert 0 < np.max(np.abs(got - ref)) < 0.05 * np.max(np.abs(ref))
    shapes = jax.eval_shape(lambda: bf16.init(jax.random.key(0), video, train=False))
    assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}


def test_remat_gives_same_loss_and_gradients():
    model = build_model({"name": "timesformer", "variant": "tiny", "depth": 1,
                         "image_size": 16, "drop_path_rate": 0.5})
    video = np.random.default_rng(0).normal(size=(2, 2, 16, 16, C)).astype(np.float32)
    params = _fake_init(model, video)

    def grads(m):
        loss = lambda p: jnp.sum(m.apply({"params": p}, video, train=True,
                                         rngs={"dropout": jax.random.key(3, impl="rbg")}) ** 2)
        return jax.jit(jax.value_and_grad(loss))(params)

    (l0, g0), (l1, g1) = grads(model), grads(model.clone(remat=True))
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), g0, g1)
    assert max(jax.tree.leaves(diffs)) < 1e-5
    assert float(np.max(np.abs(g0["blocks_0"]["temporal_fc"]["kernel"]))) > 0


def test_drop_path_is_per_example_and_only_in_training(tiny):
    x = jnp.ones((4000, 3, 2))
    y = DropPath(0.25).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    kept = np.asarray(y[:, 0, 0]) != 0
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75, rtol=1e-7)  # kept: rescaled
    np.testing.assert_array_equal(np.asarray(y)[~kept], 0.0)  # whole example dropped
    assert abs(kept.mean() - 0.75) < 0.03
    np.testing.assert_array_equal(DropPath(0.25).apply({}, x, train=False), x)
    model, params, video = tiny
    run = jax.jit(lambda k: model.apply({"params": params}, video, train=True,
                                        rngs={"dropout": jax.random.key(k, impl="rbg")}))
    np.testing.assert_array_equal(run(1), run(1))
    assert np.max(np.abs(run(1) - run(2))) > 1e-4


def test_features_head_and_other_clip_lengths(tiny):
    model, params, video = tiny
    feats = _logits(model, params, video, return_features=True)
    assert feats.shape == (B, 32)
    head = params["head"]
    np.testing.assert_allclose(_logits(model, params, video),
                               feats @ head["kernel"] + head["bias"], atol=1e-5)
    # 8 frames on a 4-frame model reads time_embed nearest: frames (0,0,1,1,2,2,3,3).
    long = np.repeat(video, 2, axis=1)
    wide = model.clone(num_frames=8)
    p8 = dict(params, time_embed=params["time_embed"][:, [0, 0, 1, 1, 2, 2, 3, 3]])
    np.testing.assert_allclose(_logits(model, params, long), _logits(wide, p8, long), atol=1e-5)
    # 48 px on a 32 px model (grid 6x6 from 4x4) reads pos_embed nearest: rows (0,0,1,2,2,3).
    big = np.random.default_rng(2).normal(size=(B, T, 48, 48, C)).astype(np.float32)
    idx = np.array([0, 0, 1, 2, 2, 3])
    grid = np.asarray(params["pos_embed"][0, 1:]).reshape(4, 4, 32)[idx][:, idx]
    pos = np.concatenate([params["pos_embed"][0, :1], grid.reshape(36, 32)])[None]
    np.testing.assert_allclose(_logits(model, params, big),
                               _logits(model.clone(image_size=48), dict(params, pos_embed=pos),
                                       big), atol=1e-5)


def test_zero_temporal_branch_makes_a_static_clip_an_image(tiny):
    """With temporal_fc and time_embed at 0, T identical frames give the 1-frame result."""
    model, params, video = tiny
    zero = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if "temporal_fc" in jax.tree_util.keystr(path)
        or "time_embed" in jax.tree_util.keystr(path) else x, params)
    frame = video[:, :1]
    one = _logits(model, zero, frame, return_features=True)
    many = _logits(model, zero, np.repeat(frame, T, axis=1), return_features=True)
    assert np.max(np.abs(one - many)) < 1e-5
    assert np.max(np.abs(_logits(model, params, np.repeat(frame, T, axis=1),
                                 return_features=True) - one)) > 1e-3  # branch on: differs


def test_channels_are_checked_and_any_channel_count_runs():
    flow = TimeSformer(num_classes=3, num_frames=2, image_size=16, patch_size=8, in_channels=2,
                       hidden_size=16, depth=1, num_heads=2, mlp_dim=32)
    video = jnp.ones((1, 2, 16, 16, 2))
    params = _fake_init(flow, video)
    assert params["patch_embed"]["kernel"].shape == (8, 8, 2, 16)
    assert _logits(flow, params, video).shape == (1, 3)
    with pytest.raises(ValueError, match="expects 2 channels, got 3"):
        flow.apply({"params": params}, jnp.ones((1, 2, 16, 16, 3)), train=False)
