"""Bounds on what the performance options change numerically (docs/benchmarks.md).

erf GELU (default) vs `jax.nn.gelu(approximate=False)`; `scan_layers=True` vs the unrolled
blocks; a bfloat16-compute train step vs the float32 one on the same weights.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmkd_jax.models import build_model
from mmkd_jax.models.layers import gelu
from mmkd_jax.train import losses

T, S, B, CLASSES = 2, 16, 3, 5


def _values() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(-12, 12, 24001), 3 * rng.normal(size=20000)]
                          ).astype(np.float32)


def test_gelu_is_the_exact_gelu_to_float32_rounding():
    x = jnp.asarray(_values())
    ref = jax.nn.gelu(x, approximate=False)
    np.testing.assert_allclose(gelu(x), ref, rtol=2e-6, atol=1e-6)
    grad = lambda f: jax.grad(lambda v: jnp.sum(f(v)))(x)
    np.testing.assert_allclose(grad(gelu), grad(lambda v: jax.nn.gelu(v, approximate=False)),
                               rtol=2e-6, atol=2e-6)
    # ...and not the tanh approximation, which differs by ~1e-3 around |x| ~ 2.
    assert float(jnp.max(jnp.abs(gelu(x) - jax.nn.gelu(x, approximate=True)))) > 1e-4


@pytest.mark.torch
def test_gelu_matches_pytorch():
    torch = pytest.importorskip("torch", reason="needs torch for F.gelu")
    x = _values()
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    # PyTorch's kernel depends on the CPU: its AVX-512 one is up to 1.07e-6 from the float64
    # GELU here (ours: 7.9e-7), the two differ by 1.2e-6 around x = -3.5 (measured, Zen 4).
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), expected, rtol=2e-6, atol=2e-6)


def _tiny(**kw):
    return build_model({"name": "timesformer", "variant": "tiny", "depth": 2, "num_frames": T,
                        "image_size": S, "patch_size": 8, "num_classes": CLASSES, **kw})


def _video(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, S, S, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def unrolled():
    """The tiny TimeSformer and random params (eval_shape + NumPy: no initialiser compiles),
    LayerNorm scales around 1 and a non-zero temporal branch, so every block input matters."""
    model = _tiny()
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), _video(), train=False))
    rng = np.random.default_rng(0)
    draw = lambda path, s: (jax.tree_util.keystr(path).endswith("['scale']")
                            + 0.2 * rng.normal(size=s.shape)).astype(np.float32)
    return model, jax.tree_util.tree_map_with_path(draw, shapes["params"])


def _grads(model, params, video, rate_key=1):
    loss = lambda p: jnp.sum(model.apply({"params": p}, video, train=True,
                                         rngs={"dropout": jax.random.key(rate_key)}) ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)


def test_scan_layers_matches_unrolled_blocks(unrolled):
    model, params = unrolled
    video = _video()
    scanned = model.clone(scan_layers=True)
    shapes = jax.eval_shape(lambda: scanned.init(jax.random.key(0), video, train=False))
    assert jax.tree.map(lambda s: s.shape, shapes["params"]) == jax.tree.map(
        lambda p: p.shape, params)  # same per-block parameter tree: converters unchanged
    logits = lambda m: jax.jit(lambda p: m.apply({"params": p}, video, train=False))(params)
    np.testing.assert_allclose(logits(scanned), logits(model), atol=1e-5, rtol=1e-5)
    # Training without dropout / drop-path (remat on: the scanned body is checkpointed):
    # the same loss and gradients.
    (l0, g0), (l1, g1) = _grads(model, params, video), _grads(scanned.clone(remat=True), params,
                                                             video)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    worst = max(jax.tree.leaves(jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12)), g1, g0)))
    assert worst < 1e-4, worst


def test_scan_layers_stochastic_depth_draws_per_key_and_per_example(unrolled):
    _, params = unrolled
    model = _tiny(scan_layers=True, drop_path_rate=0.6)
    video = np.repeat(_video()[:1], B, axis=0)  # identical examples
    run = jax.jit(lambda key: model.apply({"params": params}, video, train=True,
                                          rngs={"dropout": jax.random.key(key)}))
    np.testing.assert_array_equal(run(1), run(1))  # deterministic given the key
    assert float(jnp.max(jnp.abs(run(1) - run(2)))) > 1e-4
    out = np.asarray(run(1))
    assert np.max(np.abs(out - out[:1])) > 1e-4  # masks differ between examples


def test_bfloat16_compute_keeps_loss_and_gradients_close_to_float32(unrolled):
    """bfloat16 compute, float32 parameters and loss: the train step's loss and gradients."""
    model, params = unrolled
    rng = np.random.default_rng(1)
    video, labels = _video(1), rng.integers(0, CLASSES, size=B)

    def loss_and_grads(m):
        def loss(p):
            logits = m.apply({"params": p}, video, train=True,
                             rngs={"dropout": jax.random.key(0)})
            return losses.cross_entropy(logits, labels), logits
        (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return value, logits.dtype, np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])

    l32, _, g32 = loss_and_grads(model)
    l16, dtype, g16 = loss_and_grads(model.clone(dtype="bfloat16"))
    assert dtype == jnp.float32 and g16.dtype == np.float32
    # Measured (tiny model, 2 frames): loss 0.4% apart, gradient cosine 0.9999, norms 0.3%.
    assert 0 < abs(l16 - l32) < 0.01 * abs(l32)
    cosine = float(g32 @ g16 / (np.linalg.norm(g32) * np.linalg.norm(g16)))
    assert cosine > 0.998, cosine
    assert abs(np.linalg.norm(g16) / np.linalg.norm(g32) - 1) < 0.02
