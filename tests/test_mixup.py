"""Mixed views for distillation: every modality gets the same mix, the label term follows it."""
import jax
import jax.numpy as jnp
import numpy as np

from mmkd_jax.train import losses, mixup


def _batch(b=4, t=3, k=2):
    rng = np.random.default_rng(0)
    return {"rgb": jnp.asarray(rng.normal(size=(b, t, 8, 8, 3)), jnp.float32),
            "flow": jnp.asarray(rng.normal(size=(b, t, 8, 8, 2)), jnp.float32),
            "boxes": jnp.asarray(rng.uniform(size=(b, t, k, 4)), jnp.float32),
            "categories": jnp.asarray(rng.integers(0, 3, (b, t, k)), jnp.int32),
            "label": jnp.arange(b, dtype=jnp.int32)}


def test_every_modality_gets_the_same_mix():
    batch = _batch()
    out = mixup.mix(batch, mixup.rng(3, jnp.asarray(7)), alpha=1.0)
    lam = np.asarray(out["mix_lam"])
    perm = np.asarray(out["mix_label"])  # labels are 0..B-1: the permutation itself
    assert sorted(perm.tolist()) == list(range(4)) and np.all((lam > 0) & (lam < 1))
    for key in ("rgb", "flow"):
        x = np.asarray(batch[key])
        want = lam.reshape(-1, 1, 1, 1, 1) * x + (1 - lam.reshape(-1, 1, 1, 1, 1)) * x[perm]
        np.testing.assert_allclose(np.asarray(out[key]), want, rtol=1e-6, atol=1e-6)
    # Boxes: both clips' boxes in every frame (2K slots), categories alike.
    np.testing.assert_array_equal(np.asarray(out["boxes"]), np.concatenate(
        [batch["boxes"], np.asarray(batch["boxes"])[perm]], axis=2))
    np.testing.assert_array_equal(np.asarray(out["categories"]), np.concatenate(
        [batch["categories"], np.asarray(batch["categories"])[perm]], axis=2))
    # The same stream key at the same step mixes the same way; another step does not.
    again = mixup.mix(batch, mixup.rng(3, jnp.asarray(7)), alpha=1.0)
    np.testing.assert_array_equal(np.asarray(again["rgb"]), np.asarray(out["rgb"]))
    other = mixup.mix(batch, mixup.rng(3, jnp.asarray(8)), alpha=1.0)
    assert not np.allclose(np.asarray(other["mix_lam"]), lam)


def test_label_term_is_the_lambda_mix_of_both_labels():
    batch = mixup.mix(_batch(), mixup.rng(0, jnp.asarray(1)), alpha=1.0)
    logits = jax.random.normal(jax.random.key(0), (4, 6))
    logp = np.asarray(jax.nn.log_softmax(logits))
    lam, y, y2 = (np.asarray(batch[k]) for k in ("mix_lam", "label", "mix_label"))
    want = np.mean(-(lam * logp[np.arange(4), y] + (1 - lam) * logp[np.arange(4), y2]))
    np.testing.assert_allclose(float(mixup.cross_entropy(logits, batch)), want, rtol=1e-5)
    plain = _batch()
    np.testing.assert_allclose(float(mixup.cross_entropy(logits, plain)),
                               float(losses.cross_entropy(logits, plain["label"])), rtol=1e-6)
