"""The jitted train step: distillation correctness and its reduction to plain CE training."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmkd_jax import models
from mmkd_jax.train import optim, steps

T, S, C, B = 4, 16, 5, 8


class FixedFunction(nn.Module):
    """A teacher that is a fixed function of the clip: a linear map of its mean colour."""

    @nn.compact
    def __call__(self, video, *, train: bool):
        return nn.Dense(C, name="proj")(jnp.mean(video, axis=(1, 2, 3)) * 20.0)


def _config(w_kd, w_gt, lr=3e-3, accum=1):
    return ml_collections.ConfigDict({
        "seed": 0, "accum_steps": accum,
        "distill": {"tau": 10.0, "w_kd": w_kd, "w_gt": w_gt},
        "optim": {"lr": lr, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
                  "warmup_frac": 0.0, "clip_norm": 5.0, "wd_exclude": ()}})


def _student():
    return models.build_model({"name": "timesformer", "variant": "tiny", "num_classes": C,
                               "num_frames": T, "image_size": S, "patch_size": 8})


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"rgb": jnp.asarray(rng.normal(size=(B, T, S, S, 3)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, C, size=B), jnp.int32)}


def _run(module, members, config, num_steps, batch):
    params = module.init({"params": jax.random.key(1)}, batch["rgb"][:1], train=False)["params"]
    tx, lr_fn = optim.make_optimizer(config.optim, total_steps=10_000)
    step_fn = jax.jit(steps.make_train_step(module, "rgb", members, tx, lr_fn, config))
    state = {"params": params, "opt_state": tx.init(params)}
    history = []
    for i in range(num_steps):
        state, m = step_fn(state, batch, [p for _, p, _ in members], jnp.asarray(i, jnp.int32))
        history.append(jax.device_get(m))
    return state, history


def test_student_matches_a_fixed_function_teacher():
    teacher = FixedFunction()
    batch = _batch()
    t_params = teacher.init(jax.random.key(7), batch["rgb"][:1], train=False)["params"]
    members = [(teacher, t_params, "rgb")]
    _, hist = _run(_student(), members, _config(w_kd=1.0, w_gt=0.0), 300, batch)
    first, last = hist[0]["kd"], min(h["kd"] for h in hist[-10:])
    assert first > 0.05, first  # the teacher's soft labels are far from the student's at init
    assert last < 0.02 * first, (first, last)  # ... and the student learns to match them
    np.testing.assert_allclose(hist[-1]["loss"], hist[-1]["kd"], rtol=1e-6)  # w_gt = 0


def test_w_kd_zero_equals_plain_cross_entropy_training():
    teacher = FixedFunction()
    batch = _batch(1)
    t_params = teacher.init(jax.random.key(3), batch["rgb"][:1], train=False)["params"]
    distilled, _ = _run(_student(), [(teacher, t_params, "rgb")], _config(0.0, 1.0), 5, batch)
    plain, hist = _run(_student(), [], _config(0.0, 1.0), 5, batch)
    for a, b in zip(jax.tree.leaves(distilled["params"]), jax.tree.leaves(plain["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert hist[-1]["loss"] < hist[0]["loss"]
