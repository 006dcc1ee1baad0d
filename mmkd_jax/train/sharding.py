"""Data parallelism: one `data` mesh axis over every device of every process.

The batch is sharded along `data`, parameters and optimiser state are replicated. Each process
feeds its host-local part of the global batch; `jax.make_array_from_process_local_data` stitches
the parts into one global array, so the jitted step sees the global batch whatever the topology.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Host-side batch entries (strings, ids) that never go to the device.
HOST_KEYS = ("video_id",)


def maybe_initialize_distributed(enabled: bool | None = None) -> None:
    """Joins a multi-process run when asked to, or when the coordinator env vars are set.

    Explicit set-up (any cluster, or several processes on one machine):
    `JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=n JAX_PROCESS_ID=i`. With `enabled`
    and no env vars, `jax.distributed.initialize()` auto-detects TPU pods, SLURM and others.
    """
    env = {"coordinator_address": os.environ.get("JAX_COORDINATOR_ADDRESS"),
           "num_processes": os.environ.get("JAX_NUM_PROCESSES"),
           "process_id": os.environ.get("JAX_PROCESS_ID")}
    explicit = {k: (int(v) if k != "coordinator_address" else v)
                for k, v in env.items() if v}
    if enabled is None:
        enabled = bool(explicit)
    if enabled and not jax.distributed.is_initialized():
        jax.distributed.initialize(**explicit)
        logging.info("Joined distributed run: process %d of %d, %d local / %d global devices",
                     jax.process_index(), jax.process_count(), jax.local_device_count(),
                     jax.device_count())


def make_mesh() -> Mesh:
    # Auto axes (not jax.make_mesh's Explicit default): Linen dropout fails under Explicit axes.
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
    """The per-process batch; raises when the global batch cannot be split evenly."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if global_batch % n_dev:
        raise ValueError(f"batch_size={global_batch} is not divisible by the {n_dev} devices; "
                         f"use a multiple of {n_dev}.")
    return global_batch // n_proc


def to_global(local_batch: dict, mesh: Mesh) -> dict:
    """Host-local NumPy batch -> global jax.Arrays sharded along `data` (host keys dropped)."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items() if k not in HOST_KEYS}
