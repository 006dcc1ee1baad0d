"""Cross-entropy and Hinton distillation against direct numpy computations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmkd_jax.train.losses import cross_entropy, distill_loss, kd_loss


def _log_softmax64(x):
    x = np.asarray(x, np.float64)
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kd_numpy(s, t, tau):
    """tau^2 * sum_c p_t (log p_t - log p_s), batch mean, in float64."""
    lt, ls = _log_softmax64(np.asarray(t) / tau), _log_softmax64(np.asarray(s) / tau)
    return tau**2 * np.mean(np.sum(np.exp(lt) * (lt - ls), -1))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(6, 9)).astype(np.float32) * 3,
            rng.normal(size=(6, 9)).astype(np.float32) * 3)


@pytest.mark.parametrize("tau", [1.0, 2.0, 10.0])
def test_kd_equals_numpy(logits, tau):
    s, t = logits
    np.testing.assert_allclose(kd_loss(s, t, tau), _kd_numpy(s, t, tau), rtol=1e-5)


def test_kd_is_zero_for_matching_logits(logits):
    s, _ = logits
    assert abs(float(kd_loss(s, s, 10.0))) < 1e-7
    assert abs(float(kd_loss(s + 5.0, s, 10.0))) < 1e-5  # shift invariant (float32 x tau^2)
    assert float(kd_loss(s * 0.5, s, 10.0)) > 1e-3


def test_tau_squared_scaling(logits):
    s, t = logits
    # softmax(2s / 2) == softmax(s): only the tau^2 factor differs.
    np.testing.assert_allclose(kd_loss(2 * s, 2 * t, 2.0), 4 * kd_loss(s, t, 1.0), rtol=1e-5)
    np.testing.assert_allclose(kd_loss(10 * s, 10 * t, 10.0), 100 * kd_loss(s, t, 1.0),
                               rtol=1e-5)


def test_gradient_matches_analytic_and_finite_differences(logits):
    s, t = logits
    tau = 4.0
    grad = np.asarray(jax.grad(kd_loss)(jnp.asarray(s), jnp.asarray(t), tau))
    # d/ds of tau^2 KL / B = tau * (softmax(s/tau) - softmax(t/tau)) / B.
    analytic = tau * (np.exp(_log_softmax64(s / tau)) - np.exp(_log_softmax64(t / tau))) / len(s)
    np.testing.assert_allclose(grad, analytic, atol=1e-6)
    eps, numeric = 1e-2, np.zeros_like(s)
    for i, j in [(0, 0), (1, 3), (5, 8), (2, 4)]:
        up, down = s.copy(), s.copy()
        up[i, j] += eps
        down[i, j] -= eps
        numeric[i, j] = (_kd_numpy(up, t, tau) - _kd_numpy(down, t, tau)) / (2 * eps)
        np.testing.assert_allclose(grad[i, j], numeric[i, j], rtol=1e-3, atol=1e-6)
    # The teacher is under stop_gradient.
    assert np.all(np.asarray(jax.grad(kd_loss, argnums=1)(jnp.asarray(s), jnp.asarray(t),
                                                          tau)) == 0)


@pytest.mark.parametrize("tau", [1.0, 10.0])
def test_stable_with_huge_logits(logits, tau):
    s, t = logits
    s, t = s * 4e3, t * 4e3  # |logits| up to ~3e4
    value = float(kd_loss(s, t, tau))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, _kd_numpy(s, t, tau), rtol=1e-4)
    grad = jax.grad(kd_loss)(jnp.asarray(s), jnp.asarray(t), tau)
    assert np.all(np.isfinite(grad))
    ce = float(cross_entropy(s, np.arange(6) % 9))
    np.testing.assert_allclose(ce, -np.mean(_log_softmax64(s)[np.arange(6), np.arange(6)]),
                               rtol=1e-5)


def test_cross_entropy_equals_numpy(logits):
    s, _ = logits
    labels = np.array([0, 8, 3, 3, 1, 5])
    expected = -np.mean(_log_softmax64(s)[np.arange(6), labels])
    np.testing.assert_allclose(cross_entropy(s, labels), expected, rtol=1e-6)


def test_weights_exclude_padded_examples(logits):
    s, t = logits
    labels = np.array([0, 8, 3, -1, 1, 5])  # -1: unknown label on a padded example
    w = np.array([1, 1, 1, 0, 1, 1], np.float32)
    keep = w > 0
    np.testing.assert_allclose(kd_loss(s, t, 10.0, w), _kd_numpy(s[keep], t[keep], 10.0),
                               rtol=1e-5)
    np.testing.assert_allclose(cross_entropy(s, labels, w),
                               -np.mean(_log_softmax64(s[keep])[np.arange(5), labels[keep]]),
                               rtol=1e-6)
    assert float(kd_loss(s, t, 10.0, np.zeros(6))) == 0.0
    # Fractional weights: a weighted mean.
    w2 = np.array([2, 0, 0, 0, 0, 1], np.float32)
    per = [_kd_numpy(s[i:i + 1], t[i:i + 1], 3.0) for i in (0, 5)]
    np.testing.assert_allclose(kd_loss(s, t, 3.0, w2), (2 * per[0] + per[1]) / 3, rtol=1e-5)


def test_distill_loss_combines_kd_and_ce(logits):
    s, t = logits
    labels = np.array([0, 8, 3, 3, 1, 5])
    loss, aux = distill_loss(s, t, labels, tau=10.0, w_kd=0.7, w_gt=0.3)
    np.testing.assert_allclose(aux["kd"], _kd_numpy(s, t, 10.0), rtol=1e-5)
    np.testing.assert_allclose(aux["ce"], cross_entropy(s, labels), rtol=1e-6)
    np.testing.assert_allclose(loss, 0.7 * aux["kd"] + 0.3 * aux["ce"], rtol=1e-6)
    only_kd, _ = distill_loss(s, t, labels, tau=10.0)  # defaults: w_kd 1, w_gt 0
    np.testing.assert_allclose(only_kd, aux["kd"], rtol=1e-6)
