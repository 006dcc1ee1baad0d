"""Same recipe on any hardware: 4 devices x batch 2 x accumulation 2 == 1 device x batch 16."""
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, ml_collections
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from mmkd_jax import models
    from mmkd_jax.train import optim, steps
    assert jax.device_count() == 4, jax.devices()

    module = models.build_model({"name": "timesformer", "variant": "tiny", "num_classes": 5,
                                 "num_frames": 4, "image_size": 16, "patch_size": 8})
    rng = np.random.default_rng(0)
    batches = [{"rgb": rng.normal(size=(16, 4, 16, 16, 3)).astype(np.float32),
                "label": rng.integers(0, 5, 16).astype(np.int32)} for _ in range(3)]
    params0 = module.init({"params": jax.random.key(0)}, batches[0]["rgb"][:1],
                          train=False)["params"]

    def run(devices, accum):
        cfg = ml_collections.ConfigDict({
            "seed": 0, "accum_steps": accum,
            "distill": {"tau": 10.0, "w_kd": 0.0, "w_gt": 1.0},
            "optim": {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 1e-2,
                      "warmup_frac": 0.0, "clip_norm": 5.0, "wd_exclude": ()}})
        mesh = Mesh(np.asarray(devices), ("data",))
        repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        tx, lr_fn = optim.make_optimizer(cfg.optim, 100)
        step = jax.jit(steps.make_train_step(module, "rgb", [], tx, lr_fn, cfg))
        params = jax.device_put(params0, repl)
        state = {"params": params, "opt_state": jax.jit(tx.init, out_shardings=repl)(params)}
        losses = []
        for i, b in enumerate(batches):
            state, m = step(state, jax.device_put(b, data), [], jnp.asarray(i, jnp.int32))
            losses.append(float(m["loss"]))
        return jax.device_get(state["params"]), losses

    ref, ref_losses = run(jax.devices()[:1], accum=1)        # 1 device, batch 16
    acc, acc_losses = run(jax.devices(), accum=2)            # 4 devices x 2 x accumulation 2
    np.testing.assert_allclose(acc_losses, ref_losses, rtol=1e-5)
    worst = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(acc), jax.tree.leaves(ref)))
    moved = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(ref), jax.tree.leaves(params0)))
    print("max |param diff|", worst, "max update", moved)
    assert worst < 1e-5 and moved > 1e-3, (worst, moved)
""")


def test_accumulation_across_devices_equals_single_device_batch():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    assert "max |param diff|" in out.stdout
