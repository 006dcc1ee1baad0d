"""Transformer building blocks shared by TimeSformer and STLT: attention, MLP, drop-path."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmkd_jax.models import matmul

Dtype = Any


def Dense(features: int, *, matmul_dtype: Dtype = None, **kwargs) -> nn.Dense:  # noqa: N802
    """Every dense layer of the models: `nn.Dense` (same parameters, same names) whose matmul
    operands are `matmul_dtype` (None: the layer's dtype), fast in bfloat16 on XLA:CPU
    (models/matmul.py)."""
    return nn.Dense(features, dot_general=matmul.dense_dot_general(matmul_dtype), **kwargs)


def gelu(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU as PyTorch / Hugging Face "gelu" compute it: x/2 * (1 + erf(x/sqrt(2))).

    Same function as `jax.nn.gelu(approximate=False)` (flax defaults to the tanh approximation)
    to float32 rounding, but that one goes through `erfc`, which XLA:CPU evaluates several times
    slower than `erf` (docs/benchmarks.md; tests/test_perf_numerics.py bounds the difference).
    """
    return x * 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


ATTENTION_IMPLS = ("xla", "dot_product_attention")


def trunc_normal(stddev: float = 0.02):
    """Truncated normal at +-2 std, the timm / TimeSformer initialiser."""
    return nn.initializers.truncated_normal(stddev=stddev)


def _xla_attention(q, k, v, mask, dropout_fn, operand_dtype=None):
    """Softmax attention written out; softmax in float32 so bf16 compute stays stable.

    `operand_dtype` (None: q's dtype) is the dtype of the two products' operands; they
    accumulate in float32 and the output comes back in q's dtype.
    """
    out_dtype = q.dtype
    if operand_dtype:
        q, k, v = (t.astype(operand_dtype) for t in (q, k, v))
    acc = jnp.float32 if operand_dtype else None
    scale = q.shape[-1] ** -0.5
    # The reference computes (q @ k^T) * scale; keep that order for float32 parity.
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=acc) * scale
    logits = logits.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    probs = dropout_fn(probs)
    out = jnp.einsum("...hqk,...khd->...qhd", probs, v, preferred_element_type=acc)
    return out.astype(out_dtype)


class Attention(nn.Module):
    """Multi-head self-attention with a fused `qkv` projection and an output `proj`.

    `mask` is boolean, True where a query may attend to a key, broadcastable to
    (batch, heads, queries, keys).
    """

    num_heads: int
    qkv_bias: bool = True
    attention_dropout: float = 0.0
    dropout: float = 0.0
    impl: str = "xla"
    dtype: Dtype = jnp.float32
    matmul_dtype: Dtype = None  # operands of every matmul here (None: dtype)
    kernel_init: Any = trunc_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool, mask: jnp.ndarray | None = None):
        *batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = Dense(3 * dim, use_bias=self.qkv_bias, dtype=self.dtype,
                    matmul_dtype=self.matmul_dtype, kernel_init=self.kernel_init,
                    name="qkv")(x)
        # Output channels are laid out (3, heads, head_dim) as in timm / PyTorch in_proj. A split
        # of the channel axis (its gradient is one concatenation) rather than indexing a
        # (..., 3, heads, head_dim) view (whose gradient pads and adds three full tensors).
        q, k, v = (t.reshape(*batch, length, self.num_heads, head_dim)
                   for t in jnp.split(qkv, 3, axis=-1))
        drop = nn.Dropout(self.attention_dropout, deterministic=not train)
        if self.impl == "xla":
            out = _xla_attention(q, k, v, mask, drop, self.matmul_dtype)
        elif self.impl == "dot_product_attention":
            if train and self.attention_dropout > 0:
                raise ValueError("attention='dot_product_attention' has no attention dropout")
            lead = q.shape[:-3]
            flat = lambda t: t.reshape((-1,) + t.shape[-3:])
            if mask is not None:
                mask = jnp.broadcast_to(mask, lead + (self.num_heads, length, length))
                mask = mask.reshape((-1,) + mask.shape[-3:])
            op = self.matmul_dtype or q.dtype
            out = jax.nn.dot_product_attention(*(flat(t.astype(op)) for t in (q, k, v)),
                                               mask=mask)
            out = out.reshape(q.shape).astype(q.dtype)
        else:
            raise ValueError(f"unknown attention {self.impl!r}; expected one of {ATTENTION_IMPLS}")
        out = out.reshape(*batch, length, dim)
        out = Dense(dim, dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                    kernel_init=self.kernel_init, name="proj")(out)
        return nn.Dropout(self.dropout, deterministic=not train)(out)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout."""

    hidden_dim: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    matmul_dtype: Dtype = None
    kernel_init: Any = trunc_normal()

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        dim = x.shape[-1]
        x = Dense(self.hidden_dim, dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                  kernel_init=self.kernel_init, name="fc1")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(gelu(x))
        x = Dense(dim, dtype=self.dtype, matmul_dtype=self.matmul_dtype,
                  kernel_init=self.kernel_init, name="fc2")(x)
        return nn.Dropout(self.dropout, deterministic=not train)(x)


class DropPath(nn.Module):
    """Stochastic depth: zero the whole residual branch of an example with probability `rate`.

    The mask is drawn per leading-axis entry (one video), from the "dropout" RNG stream, and
    kept branches are scaled by 1/(1-rate) so the expectation is unchanged.
    """

    rate: Any  # float, or a traced scalar when the blocks are scanned

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        # A Python zero skips the branch at trace time; a traced rate (scanned blocks) cannot.
        if not train or (isinstance(self.rate, (int, float)) and self.rate == 0):
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
