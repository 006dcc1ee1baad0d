"""orbax checkpoints: exact round trip, latest-k plus best-by-top-1 retention."""
import jax
import jax.numpy as jnp
import numpy as np

from mmkd_jax.train import checkpoint


def _tree(v):
    return {"a": jnp.full((3, 2), v, jnp.float32), "b": {"c": jnp.arange(4) + v}}


def test_round_trip_is_exact_and_meta_survives(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    params, opt = _tree(1.5), {"mu": _tree(0.25), "count": jnp.asarray(7)}
    ckpt.save(10, params, opt, {"label_names": ["x", "y"], "step": 10})
    ckpt.wait()
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    p2, o2, meta = ckpt.restore(10, checkpoint.abstract_like(params, dev),
                                checkpoint.abstract_like(opt, dev))
    for a, b in zip(jax.tree.leaves((params, opt)), jax.tree.leaves((p2, o2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert meta == {"label_names": ["x", "y"], "step": 10}
    only = ckpt.restore_params(10, checkpoint.abstract_like(params, dev))
    np.testing.assert_array_equal(only["a"], params["a"])
    ckpt.close()


def test_keeps_latest_k_plus_best(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    scores = {1: 10.0, 2: 50.0, 3: 20.0, 4: 30.0, 5: None, 6: 25.0}
    for step, top1 in scores.items():
        ckpt.save(step, _tree(step), {"count": jnp.asarray(step)}, {"step": step},
                  metrics=None if top1 is None else {"top1": top1})
        ckpt.wait()
    assert ckpt.manager.all_steps() == [2, 5, 6]  # best (2) + latest two (5, 6)
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 6
    ckpt.close()
    reader = checkpoint.Checkpointer(str(tmp_path), read_only=True)
    assert reader.best_step() == 2
    np.testing.assert_array_equal(reader.restore_params(2)["a"], np.full((3, 2), 2.0))
