"""XLA:CPU runs Eigen's kernels (batched attention products among them) on one thread.

The synthetic presets' models are small: a train step is several hundred tiny kernels, and
Eigen's multi-threaded dot splits a (128 x 2) batch of 8x16 products over the pool at a cost
larger than the products. Measured on 2 Zen 4 cores (bench/train_step.py --presets synthetic):
train step 20.1 -> 16.2 ms, distillation step 34.7 -> 26.3 ms, a population of 4 students
60.7 -> 47.1 ms; the ViT-B/16 8x224 train step, whose large products run in YNNPACK, is
unchanged (7.13 vs 7.28 s, one run each). `mmkd_jax.main` applies it on CPU-only runs before
JAX starts; an XLA_FLAGS that already names the flag wins, and MMKD_XLA_CPU=default skips it.
"""
from __future__ import annotations

import os

from mmkd_jax import host_memory

FLAG = "--xla_cpu_multi_thread_eigen=false"
ENV = "MMKD_XLA_CPU"


def single_threaded_eigen() -> bool:
    """Adds FLAG to XLA_FLAGS (before the CPU backend starts); True if it did."""
    flags = os.environ.get("XLA_FLAGS", "")
    if (os.environ.get(ENV, "").strip().lower() == "default" or "xla_cpu_multi_thread_eigen"
            in flags or not host_memory.cpu_only()):
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + FLAG).strip()
    return True
