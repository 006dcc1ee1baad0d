"""Top-k counting with masks and ties."""
import jax.numpy as jnp
import numpy as np

from mmkd_jax.train import metrics, steps


def test_topk_counts_with_mask():
    logits = jnp.array([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0],    # label 1: top-1
                        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],    # label 4: rank 4 -> top-5 only
                        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],    # label 5: rank 5 -> neither
                        [9.0, 0.0, 0.0, 0.0, 0.0, 0.0]])   # padding (mask 0)
    labels = jnp.array([1, 4, 5, 0])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    out = {k: float(v) for k, v in steps.topk_correct(logits, labels, mask).items()}
    assert out == {"top1": 1.0, "top5": 2.0, "count": 3.0}


def test_topk_with_fewer_classes_than_k_counts_everything():
    out = steps.topk_correct(jnp.zeros((2, 3)), jnp.array([0, 2]), jnp.ones(2))
    assert float(out["top5"]) == 2.0 and float(out["top1"]) == 2.0  # ties: not strictly higher


def test_eta_format():
    assert metrics.format_eta(3725.2) == "1:02:05"
    assert metrics.format_eta(np.inf) == "?"
