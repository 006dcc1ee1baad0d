"""The JAX side of bench/vs_pytorch.py: the project's own jitted steps on the case's weights.

Train and distillation use `mmkd_jax.train.steps.make_train_step` (the step the trainer runs:
frozen teacher members and student in one jitted call, state donated) with the optimiser of
`mmkd_jax.train.optim`; inference is the jitted `module.apply(train=False)`. Weights come from
the PyTorch files through `mmkd_jax.convert`, so both frameworks compute the same function.

Options (on/off measurements, bench/vs_pytorch.py --jax_variants):
  attention  "xla" | "dot_product_attention"     dtype   "float32" | "bfloat16" (params float32)
  matmul_dtype  "" | "bfloat16": matmul operands only, float32 between matmuls (autocast style)
  bf16_vjp   the dense layers' bf16 custom VJP on CPU (models/matmul.py; off: plain autodiff)
  remat      rematerialise each block             donate  donate the train state (default on)
  scan_layers  the TimeSformer blocks as one `lax.scan` (one compiled block)
  gelu       "erf" (the model's) | "erfc" (`jax.nn.gelu(approximate=False)`, the previous one)
  sync       fetch the metrics every step (a host sync, what `float(loss)` in a loop does)
  feed       "device": the batch stays on device; "host": a fresh host batch is put on the
             device every step; "prefetch": the same, one step ahead
"""
from __future__ import annotations

import os
import time

import cases
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmkd_jax import convert, models
from mmkd_jax.models import layers, matmul
from mmkd_jax.train import losses, optim, steps

DEFAULTS = {"attention": "xla", "dtype": "float32", "matmul_dtype": "", "remat": False,
            "scan_layers": False, "donate": True, "sync": False, "feed": "device", "gelu": "erf",
            "bf16_vjp": True}
ARCH = ("attention", "dtype", "matmul_dtype", "remat", "scan_layers")  # TimeSformer fields


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


class JaxCase:
    def __init__(self, spec: dict, weights: str, options: dict):
        self.spec, self.opts = spec, {**DEFAULTS, **options}
        unknown = set(self.opts) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown JAX options {sorted(unknown)}; known {sorted(DEFAULTS)}")
        if self.opts["gelu"] == "erfc":
            # Bench-only switch back to the previous GELU. Every Mlp looks `layers.gelu` up at
            # trace time; STLT's head imported the name itself and keeps erf (one call).
            layers.gelu = lambda x: jax.nn.gelu(x, approximate=False)
        # Bench-only switch: every Dense reads it at trace time.
        matmul.CPU_FAST_PATH = bool(self.opts["bf16_vjp"])
        arch = {k: self.opts[k] for k in ARCH}
        self.host = cases.batch(spec)
        self.batch = jax.device_put(self.host)
        self.module, params = convert.timesformer_from_hf(
            os.path.join(weights, "student"), **arch,
            drop_path_rate=spec["timesformer"]["drop_path_rate"])
        self.members = []
        if spec["workload"] == "distill":
            teacher = {k: v for k, v in arch.items() if k != "remat"}  # no grads: no remat
            rgb = convert.timesformer_from_hf(os.path.join(weights, "teacher_rgb"), **teacher)
            flow = convert.timesformer_from_hf(os.path.join(weights, "teacher_flow"),
                                               **teacher)
            layout = convert.stlt_from_torch(
                dict(np.load(os.path.join(weights, "teacher_layout.npz"))),
                num_heads=spec["stlt"]["num_heads"], num_frames=spec["frames"],
                dropout=spec["stlt"]["dropout"], dtype=self.opts["dtype"],
                matmul_dtype=self.opts["matmul_dtype"])
            self.members = [(*rgb, "rgb"), (*flow, "flow"), (*layout, "layout")]
        self.teacher_params = jax.device_put([p for _, p, _ in self.members])
        self.population = int(spec.get("population", 1)) if spec["workload"] != "infer" else 1
        self.params = jax.device_put(params)
        self.i = 0

    # --- build and compile
    def _config(self) -> ml_collections.ConfigDict:
        o = self.spec["optim"]
        return ml_collections.ConfigDict({
            "seed": self.spec["seed"], "accum_steps": 1,
            "distill": {"tau": self.spec["tau"], "w_kd": 1.0, "w_gt": 0.0},
            "optim": {k: o[k] for k in ("lr", "b1", "b2", "eps", "weight_decay", "warmup_frac",
                                        "clip_norm")} | {"wd_exclude": tuple(o["wd_exclude"])}})

    def setup(self) -> dict:
        start = time.perf_counter()
        if self.spec["workload"] == "infer":
            fn = jax.jit(lambda p, x: self.module.apply({"params": p}, x, train=False))
            args = (self.params, self.batch["rgb"])
        else:
            config = self._config()
            tx, lr_fn = optim.make_optimizer(config.optim, self.spec["optim"]["total_steps"])
            self.state = {"params": self.params, "opt_state": jax.jit(tx.init)(self.params)}
            k = self.population
            if k > 1:  # K students (the same weights), one vmapped step, teachers run once
                self.state = jax.tree.map(lambda x: jnp.stack([x] * k), self.state)
                m = len(self.members)
                population = steps.Population(
                    seeds=np.arange(k), w_kd=np.full(k, 1.0 if m else 0.0),
                    w_gt=np.full(k, 0.0 if m else 1.0), tau=np.full(k, self.spec["tau"]),
                    teacher=np.full((k, m), 1.0 / max(m, 1), np.float32),
                    streams=np.zeros(k, np.int64), slot_streams=np.zeros(m, np.int64),
                    stream_seeds=np.zeros(1, np.int64))
                step_fn = steps.make_population_step(self.module, "rgb", self.members, tx,
                                                     lr_fn, population)
                self.batch = [self.batch]
            else:
                step_fn = steps.make_train_step(self.module, "rgb", self.members, tx, lr_fn,
                                                config)
            fn = jax.jit(step_fn, donate_argnums=(0,) if self.opts["donate"] else ())
            args = (self.state, self.batch, self.teacher_params, jnp.asarray(0, jnp.int32))
        lowered = fn.lower(*args)
        traced = time.perf_counter()
        self.compiled = lowered.compile()
        compiled = time.perf_counter()
        check = self.check()
        start_first = time.perf_counter()
        self.sync(self.step())
        first = time.perf_counter() - start_first
        info = {"trace_lower_s": traced - start, "compile_s": compiled - traced,
                "first_step_s": first, "check": check,
                "device_kind": jax.devices()[0].device_kind}
        cost = _first(self.compiled.cost_analysis())
        if cost and "flops" in cost:
            info["flops"] = float(cost["flops"])
        mem = self.compiled.memory_analysis()
        if mem is not None:
            # What XLA allocates for one step: live arguments, outputs not aliased to donated
            # inputs, and temporaries.
            info["xla_step_bytes"] = int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                         - mem.alias_size_in_bytes + mem.temp_size_in_bytes)
            info["xla_temp_bytes"] = int(mem.temp_size_in_bytes)
        return info

    # --- run
    def _next_batch(self):
        feed = self.opts["feed"]
        if feed == "device":
            return self.batch
        host = {k: v if self.i % 2 == 0 else v[::-1].copy() for k, v in self.host.items()}
        return [jax.device_put(host)] if self.population > 1 else jax.device_put(host)

    def step(self):
        if self.spec["workload"] == "infer":
            return self.compiled(self.params, self.batch["rgb"])
        if self.opts["feed"] == "prefetch":
            batch = getattr(self, "_prefetched", None) or self._next_batch()
            self.i += 1
            self._prefetched = self._next_batch()  # transfer overlaps the step below
        else:
            batch = self._next_batch()
            self.i += 1
        self.state, out = self.compiled(self.state, batch, self.teacher_params,
                                        jnp.asarray(self.i - 1, jnp.int32))
        if self.opts["sync"]:
            jax.device_get(out)
        return out

    def sync(self, out) -> None:
        jax.block_until_ready(out)
        if self.spec["workload"] != "infer":
            jax.block_until_ready(self.state)

    def check(self) -> list[float]:
        """Deterministic numbers to compare with PyTorch: eval-mode logits or loss."""
        params = self.params if self.spec["workload"] == "infer" else self.state["params"]
        if self.population > 1:  # member 0 (every member starts from the same weights)
            params = jax.tree.map(lambda x: x[0], params)
        batch = self.batch[0] if isinstance(self.batch, list) else self.batch
        logits = jax.jit(lambda p, x: self.module.apply({"params": p}, x, train=False))(
            params, batch["rgb"])
        if self.spec["workload"] == "infer":
            return [float(v) for v in np.asarray(logits)[0, :8]]
        if not self.members:
            return [float(losses.cross_entropy(logits, batch["label"]))]
        teacher = jax.jit(lambda tp, b: models.ensemble_logits(
            [(m, p, mod) for (m, _, mod), p in zip(self.members, tp)], b))(
                self.teacher_params, batch)
        return [float(losses.kd_loss(logits, teacher, self.spec["tau"]))]

    def memory(self) -> dict:
        stats = jax.devices()[0].memory_stats() or {}
        return ({"device_peak_bytes": int(stats["peak_bytes_in_use"])}
                if "peak_bytes_in_use" in stats else {})

    def reset_memory(self) -> None:
        pass  # XLA has no public reset of the device peak; the first-step peak is included
