"""The paper's schedule and the weight-decay mask, checked value by value."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmkd_jax.train import optim


def test_schedule_warmup_then_linear_decay_to_zero():
    lr = optim.schedule(5e-5, total_steps=100, warmup_frac=0.1)
    np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(55), lr(100)],
                               [0.0, 2.5e-5, 5e-5, 2.5e-5, 0.0], atol=1e-12)
    # Monotone up to the peak, monotone down after it.
    values = np.array([lr(s) for s in range(101)])
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) < 0)


def test_decay_mask_spares_norms_biases_and_embeddings():
    params = {"cls": jnp.zeros((1, 1, 8)), "pos_embed": jnp.zeros((1, 5, 8)),
              "time_embed": jnp.zeros((1, 4, 8)),
              "block_0": {"attn": {"qkv": {"kernel": jnp.zeros((8, 24)), "bias": jnp.zeros(24)}},
                          "norm1": {"scale": jnp.ones(8), "bias": jnp.zeros(8)}},
              "head": {"kernel": jnp.zeros((8, 3)), "bias": jnp.zeros(3)}}
    mask = optim.decay_mask(params, ("pos_embed", "time_embed", r"(^|/)cls"))
    flat = {optim.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat == {"cls": False, "pos_embed": False, "time_embed": False,
                    "block_0/attn/qkv/kernel": True, "block_0/attn/qkv/bias": False,
                    "block_0/norm1/scale": False, "block_0/norm1/bias": False,
                    "head/kernel": True, "head/bias": False}


def test_adamw_decays_only_masked_params_and_clips():
    cfg = ml_collections.ConfigDict(dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.5,
                                         warmup_frac=0.0, clip_norm=5.0, wd_exclude=("emb",)))
    tx, lr_fn = optim.make_optimizer(cfg, total_steps=10)
    params = {"w": jnp.ones((2, 2)), "emb": jnp.ones((2, 2))}
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    # Zero gradients: only decoupled weight decay moves `w`, by -lr * wd * w (lr at step 0).
    np.testing.assert_allclose(updates["w"], -lr_fn(0) * 0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["emb"], 0.0)
    # Gradient clipping to global norm 5: a huge gradient gives the same Adam step direction.
    big = {"w": jnp.full((2, 2), 1e6), "emb": jnp.zeros((2, 2))}
    clipped = optax.clip_by_global_norm(5.0).update(big, optax.EmptyState())[0]
    assert abs(float(optax.global_norm(clipped)) - 5.0) < 1e-4
