"""The dense matmul (mmkd_jax/models/matmul.py): exact semantics of the bfloat16 paths, the
form XLA:CPU compiles them to, and what mixed precision changes in a model."""
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from mmkd_jax.models import build_model, matmul

BF16 = jnp.bfloat16


def _bf16(a: np.ndarray) -> np.ndarray:
    """Round to bfloat16 and back to float64: the values the bf16 operands hold."""
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _dense(x, w, operand_dtype):
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    return matmul.dense_dot_general(operand_dtype)(x, w, dims)


# (leading shape, K, N): a ViT-like case, batch 1 (m = 1, which YNNPACK refuses), a prime
# leading size (no split for the transposed copy), dims below YNNPACK's minimum of 8.
SHAPES = [((2, 96), 64, 48), ((1,), 32, 10), ((1, 97), 16, 24), ((3, 5), 4, 7)]


@pytest.mark.parametrize("lead,k,n", SHAPES)
@pytest.mark.parametrize("x_dtype", ["float32", "bfloat16"])
def test_bf16_operands_forward_and_gradients_are_exact_products(lead, k, n, x_dtype):
    """Forward, input and weight gradients = float64 products of the bf16-rounded operands
    (incoming gradient rounded too), to float32 accumulation: the semantics of a bf16 matmul
    with float32 accumulation, on every path (fast CPU one or fallback)."""
    rng = np.random.default_rng(k + n)
    x = jnp.asarray(rng.normal(size=lead + (k,)), x_dtype)
    w = jnp.asarray(0.1 * rng.normal(size=(k, n)), jnp.float32)
    g = rng.normal(size=lead + (n,)).astype(np.float32)

    y, vjp = jax.vjp(jax.jit(lambda x, w: _dense(x, w, "bfloat16")), x, w)
    dx, dw = vjp(jnp.asarray(g, y.dtype))
    assert y.dtype == x.dtype and dx.dtype == x.dtype and dw.dtype == jnp.float32

    x2, w2 = _bf16(np.asarray(x, np.float32)).reshape(-1, k), _bf16(w)
    g2 = _bf16(np.asarray(jnp.asarray(g, y.dtype), np.float32)).reshape(-1, n)
    tol = 2e-6 if x_dtype == "float32" else 4e-3  # bf16 results are rounded to bf16
    for got, ref in ((y, x2 @ w2), (dx, g2 @ w2.T), (dw, x2.T @ g2)):
        got = np.asarray(got, np.float64).reshape(ref.shape)
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_float32_path_is_plain_dot_general():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 6, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)
    plain = jax.lax.dot_general(x, w, (((2,), (0,)), ((), ())))
    np.testing.assert_array_equal(_dense(x, w, None), plain)
    np.testing.assert_array_equal(_dense(x, w, ""), plain)


def _dot_operand_dtypes(hlo: str) -> list[tuple[str, str]]:
    """(lhs, rhs) element types of every dot in an optimised HLO module's text."""
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
    pairs = []
    for lhs, rhs in re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\)", hlo):
        pairs.append((types[lhs], types[rhs]))
    return pairs


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU compilation form")
@pytest.mark.parametrize("x_dtype", ["float32", "bfloat16"])
def test_cpu_compiles_all_three_products_as_bf16_dots(x_dtype):
    """The point of the custom VJP: forward, input gradient and weight gradient are all
    `bf16 x bf16` dots after XLA:CPU's optimisation (with plain autodiff the weight gradient's
    operands are upcast to float32, and run at half the speed on AVX512-BF16 CPUs)."""
    m, k, n = 392, 64, 96
    x = jnp.zeros((m, k), x_dtype)
    w = jnp.zeros((k, n), jnp.float32)
    g = jnp.zeros((m, n), x_dtype)

    def fwd_bwd(x, w, g):
        y, vjp = jax.vjp(lambda x, w: _dense(x, w, "bfloat16"), x, w)
        return (y, *vjp(g))

    hlo = jax.jit(fwd_bwd).lower(x, w, g).compile().as_text()
    dots = _dot_operand_dtypes(hlo)
    assert len(dots) == 3, dots
    assert all(pair == ("bf16", "bf16") for pair in dots), dots

    # The plain formulation, for contrast: some dot gets float32 operands.
    def plain(x, w, g):
        f = lambda x, w: jax.lax.dot_general(x.astype(BF16), w.astype(BF16),
                                             (((1,), (0,)), ((), ())),
                                             preferred_element_type=jnp.float32)
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(g.astype(jnp.float32)))

    plain_dots = _dot_operand_dtypes(jax.jit(plain).lower(x, w, g).compile().as_text())
    assert any("f32" in pair for pair in plain_dots), plain_dots


def _model_and_params(name: str, args: tuple, rng: np.random.Generator, **fields):
    """A tiny model and its init perturbed (non-zero temporal_fc, biases): every layer counts."""
    base = build_model({"name": name, "variant": "tiny", "num_classes": 7, **fields})
    params = base.init(jax.random.key(0), *args, train=False)["params"]
    return base, jax.tree.map(
        lambda p: p + 0.05 * rng.normal(size=p.shape).astype(np.float32), params)


@pytest.mark.parametrize("name,inputs", [("timesformer", "video"), ("stlt", "boxes")])
def test_mixed_precision_model_stays_close_to_float32(name, inputs):
    """matmul_dtype=bfloat16 with float32 activations (the CPU fast mode) vs float32: logits
    and gradients of the same weights, and closer than all-bfloat16 compute."""
    rng = np.random.default_rng(0)
    if inputs == "video":
        args = (rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32),)
    else:
        xy = rng.uniform(0, 0.6, size=(2, 4, 3, 2))
        args = (np.concatenate([xy, xy + 0.3], -1).astype(np.float32),
                rng.integers(1, 3, size=(2, 4, 3)).astype(np.int32))
    base, params = _model_and_params(name, args, rng, dropout=0.0)

    def run(model):
        f = lambda p: model.apply({"params": p}, *args, train=False)
        logits, vjp = jax.vjp(jax.jit(f), params)
        (grads,) = vjp(jnp.ones_like(logits))
        return np.asarray(logits), np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])

    l32, g32 = run(base)
    lmix, gmix = run(base.clone(matmul_dtype="bfloat16"))
    l16, g16 = run(base.clone(dtype="bfloat16"))
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    err_mix, err_16 = np.abs(lmix - l32).max(), np.abs(l16 - l32).max()
    scale = np.abs(l32).max()
    # Measured: TimeSformer tiny logits 3.0e-3 apart (scale 0.63; all-bf16 4.4e-3), STLT tiny
    # 8.3e-3 (scale 1.72; all-bf16 1.8e-2); gradient cosine 0.999995 / 0.99997.
    assert 0 < err_mix < 0.01 * scale, (err_mix, scale)
    assert err_mix < err_16, (err_mix, err_16)
    assert cos(gmix, g32) > 0.9999, cos(gmix, g32)
    assert abs(np.linalg.norm(gmix) / np.linalg.norm(g32) - 1) < 0.005


def test_both_attention_impls_take_matmul_dtype():
    """`attention="dot_product_attention"` casts its operands to matmul_dtype as the written-out
    attention does: the two agree (bf16 products both) and both differ from float32."""
    rng = np.random.default_rng(1)
    video = rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
    base, params = _model_and_params("timesformer", (video,), rng)
    run = lambda m: np.asarray(jax.jit(lambda p: m.apply({"params": p}, video, train=False))(
        params))
    l32 = run(base)
    xla = run(base.clone(matmul_dtype="bfloat16"))
    dpa = run(base.clone(matmul_dtype="bfloat16", attention="dot_product_attention"))
    scale = np.abs(l32).max()
    assert np.abs(dpa - xla).max() < 0.01 * scale
    assert np.abs(dpa - l32).max() > 1e-5 and np.abs(xla - l32).max() > 1e-5
