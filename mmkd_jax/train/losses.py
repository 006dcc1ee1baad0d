"""Classification and distillation losses (float32, log-space, stable at tau=10 and large logits).

Every loss takes an optional per-example `weights` (B,): the result is
`sum(w * l) / sum(w)`, so padded examples (w = 0) are excluded; 0 when all weights are 0.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _weighted_mean(per_example: jnp.ndarray, weights: jnp.ndarray | None) -> jnp.ndarray:
    if weights is None:
        return jnp.mean(per_example)
    weights = weights.astype(jnp.float32)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  weights: jnp.ndarray | None = None) -> jnp.ndarray:
    """Softmax cross-entropy with integer labels (B,); labels outside [0, C) contribute 0."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    return _weighted_mean(-jnp.sum(onehot * logp, axis=-1), weights)


def kd_per_example(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                   tau: float) -> jnp.ndarray:
    """tau^2 * KL(softmax(t/tau) || softmax(s/tau)) per example, summed over classes."""
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    logp_t = jax.nn.log_softmax(t / tau, axis=-1)
    logp_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / tau, axis=-1)
    p_t = jnp.exp(logp_t)
    # Classes with p_t == 0 (e.g. -inf teacher logits) contribute 0, not 0 * inf.
    kl = jnp.sum(jnp.where(p_t > 0, p_t * (logp_t - logp_s), 0.0), axis=-1)
    return tau**2 * kl


def kd_loss(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, tau: float,
            weights: jnp.ndarray | None = None) -> jnp.ndarray:
    """Hinton distillation, mean over the (weighted) batch; the teacher gets no gradient."""
    return _weighted_mean(kd_per_example(student_logits, teacher_logits, tau), weights)


def distill_loss(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                 labels: jnp.ndarray, *, tau: float, w_kd: float = 1.0, w_gt: float = 0.0,
                 weights: jnp.ndarray | None = None) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """`w_kd * KD + w_gt * CE`; returns (loss, {"kd", "ce"}) for logging."""
    kd = kd_loss(student_logits, teacher_logits, tau, weights)
    ce = cross_entropy(student_logits, labels, weights)
    return w_kd * kd + w_gt * ce, {"kd": kd, "ce": ce}
