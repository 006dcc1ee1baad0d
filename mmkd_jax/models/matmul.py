"""The dense layers' matmul: `lax.dot_general`, with bfloat16 operands when asked, fast on CPUs.

Two precision modes reach here through `nn.Dense(dot_general=dense_dot_general(...))`:
- `dtype=bfloat16`: the whole model computes in bfloat16 (activations, LayerNorm outputs,
  matmul operands and results); the usual GPU/TPU setting.
- `matmul_dtype=bfloat16` with `dtype=float32`: only the matmul operands are bfloat16, products
  accumulate and come out in float32, and everything between matmuls stays float32. This is what
  PyTorch's `torch.autocast(dtype=torch.bfloat16)` does for linear layers, and on CPUs it is the
  fast mode: XLA:CPU evaluates bfloat16 elementwise ops in float32 with a rounding after each
  one (convert pairs around every op), which a float32 model between matmuls avoids.

Why a custom VJP. On CPUs with AVX512-BF16 (AMD Zen 4, Intel Sapphire Rapids and later)
XLA:CPU multiplies bfloat16 matrices twice as fast as float32 ones (431 vs 216 GFLOP/s on 2
Zen 4 cores), but only through YNNPACK, and only for a `bf16 x bf16 -> f32` dot whose left
operand contracts over its last axis, row-major (`xla/backends/cpu/ynn_support.cc`); other
bfloat16 dots are upcast to float32 early in compilation. Autodiff's weight gradient `x^T @ g`
contracts over the leading (token) axis of `x`, so it was always upcast. `_dense` writes all
three products (forward, input gradient, weight gradient) in the supported form, with `x^T`
materialised (`_transposed`). The values are those of the plain path up to summation order:
XLA:CPU accumulates bfloat16 dots in float32 either way (tests/test_matmul.py). Off the
CPU backend the casts are the same and the dot is plain `lax.dot_general` with a float32 result:
cuBLAS and the TPU MXU accumulate bfloat16 in float32 natively.

Float32 dense layers take the same path on the CPU. Under the population step's `vmap`
(train/steps.py) autodiff's weight gradient is a batched dot contracting the token axis of
both operands, a form YNNPACK does not take, so XLA:CPU ran it in its single-threaded Eigen
fallback (15 dots, ~3 ms of a ~30 ms step for 4 synthetic-size members); written as
`x^T @ g` with `x^T` materialised it is a YNNPACK batched dot. Measured interleaved in one
process on 2 Zen 5 cores (the synthetic preset's baseline step, batch 8, median of 8 rounds of
10 steps): solo 7.69 -> 6.60 ms, population of 4 20.56 -> 17.45 ms; the distillation step
10.30 -> 10.17 ms and 21.06 -> 20.16 ms. Float32 values are those of the plain dot up to
summation order.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

# The custom-VJP path on the CPU backend; bench/jax_side.py turns it off to measure it.
CPU_FAST_PATH = True
_CUSTOM_VJP_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


def _dot(a: jnp.ndarray, b: jnp.ndarray, contract: tuple[int, int]) -> jnp.ndarray:
    """2-D `a . b` over axes `contract`, accumulated and returned in float32."""
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                           preferred_element_type=jnp.float32)


def _transposed(x: jnp.ndarray) -> jnp.ndarray:
    """`x.T` materialised row-major.

    A 2-D transpose reaches XLA as a layout change, which its simplifier folds into the dot's
    contraction ("contract axis 0 of x"): not the form YNNPACK takes. Splitting the leading axis
    and permuting the 3-D view is a transpose XLA keeps as a copy, so the dot after it sees a
    row-major operand. A leading axis with no small divisor falls back to `x.T` (correct, only
    slower: that one dot is then upcast to float32).
    """
    m, k = x.shape
    split = next((s for s in (8, 7, 6, 5, 4, 3, 2) if m % s == 0 and m > s), None)
    if split is None:
        return x.T
    return jnp.transpose(x.reshape(split, m // split, k), (2, 0, 1)).reshape(k, m)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _dense(x: jnp.ndarray, w: jnp.ndarray, operand_dtype: Any, x_dtype: Any,
           w_dtype: Any) -> jnp.ndarray:
    """(M, K) @ (K, N): operands cast to `operand_dtype`, float32 accumulation, x's dtype out.

    `x_dtype` and `w_dtype` are x's and w's own dtypes, static so the backward can cast the
    gradients back (residuals must be arrays).
    """
    return _dot(x.astype(operand_dtype), w.astype(operand_dtype), (1, 0)).astype(x_dtype)


def _dense_fwd(x, w, operand_dtype, x_dtype, w_dtype):
    xo, wo = x.astype(operand_dtype), w.astype(operand_dtype)
    # Residuals in the operand dtype: half the activation memory of a float32 model.
    return _dot(xo, wo, (1, 0)).astype(x_dtype), (xo, wo)


def _dense_bwd(operand_dtype, x_dtype, w_dtype, res, g):
    xo, wo = res
    g = g.astype(operand_dtype)
    dx = _dot(g, wo, (1, 1))                # (M, N) . (K, N) over N
    dw = _dot(_transposed(xo), g, (1, 0))   # (K, M) @ (M, N)
    return dx.astype(x_dtype), dw.astype(w_dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def _is_dense(lhs, rhs, dimension_numbers) -> bool:
    """`nn.Dense`'s contraction: lhs (..., K) last axis with rhs (K, N) first, no batch axes."""
    (lc, rc), (lb, rb) = dimension_numbers
    return (rhs.ndim == 2 and lhs.ndim >= 2 and tuple(lc) == (lhs.ndim - 1,)
            and tuple(rc) == (0,) and not lb and not rb)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                *, operand_dtype: Any = None, **kwargs):
    """`lax.dot_general` with operands in `operand_dtype` (None: as given), result in lhs's dtype.

    Dense-shaped bfloat16 and float32 products on the CPU backend take `_dense`; everything else
    is `lax.dot_general` (bfloat16 operands with a float32 result when the dtypes differ).
    """
    op = jnp.dtype(operand_dtype or lhs.dtype)
    out_dtype = preferred_element_type or lhs.dtype
    if (CPU_FAST_PATH and op in _CUSTOM_VJP_DTYPES and not kwargs and preferred_element_type is None
            and _is_dense(lhs, rhs, dimension_numbers) and jax.default_backend() == "cpu"):
        out = _dense(lhs.reshape(-1, lhs.shape[-1]), rhs, op, lhs.dtype, rhs.dtype)
        return out.reshape(*lhs.shape[:-1], rhs.shape[1])
    if op == lhs.dtype == rhs.dtype:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)
    out = lax.dot_general(lhs.astype(op), rhs.astype(op), dimension_numbers,
                          precision=precision, preferred_element_type=jnp.float32, **kwargs)
    return out.astype(out_dtype)


def dense_dot_general(operand_dtype: Any = None):
    """The `nn.Dense(dot_general=...)` whose operands are `operand_dtype` (None or "": the
    layer's dtype)."""
    if not operand_dtype:
        return dot_general
    return functools.partial(dot_general, operand_dtype=jnp.dtype(operand_dtype))
