"""Independent trainings side by side in worker processes: missing teacher members, Table 1 rows.

On a CPU, XLA:CPU runs one small model's step about as fast on one core as on two (the
synthetic TimeSformer: 15.5 ms per train step pinned to one core, 16.2 ms on two; the work is
many small kernels, not a few large ones, docs/benchmarks.md), so trainings that do not depend
on each other finish sooner side by side than one after another. Each job is a list of
(config, workdir) runs that `trainer.train_population` trains together, in a spawned process
(never forked: the parent holds TF and JAX threads), which writes its run's workdirs exactly as
an in-process run would and returns the same results. Logs go to the terminal, as in-process
runs' do, and to `log.txt` of the job's first workdir.

Only CPU-only, single-process runs use workers: on an accelerator a second process would
compete for the device's memory, and a multi-host run's processes must stay in step.
"""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
from collections.abc import Callable

import ml_collections

from mmkd_jax import host_memory, logs
from mmkd_jax.data import pipeline

Job = list[tuple[ml_collections.ConfigDict, str]]


def default_workers(jobs: int) -> int:
    """min(jobs, CPU cores) on a single-process CPU-only run, else 1."""
    if jobs <= 1 or not host_memory.cpu_only() or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return 1
    return max(1, min(jobs, len(os.sched_getaffinity(0))))


def _init_worker() -> None:
    host_memory.keep_freed_memory()  # before this process starts any thread, as main does
    from absl import logging
    logging.set_verbosity(logging.INFO)


def _from_json(text: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(json.loads(text))
    # A list of dicts comes back as plain dicts: member specs are read as ConfigDicts.
    cfg.teacher.members = [ml_collections.ConfigDict(m) for m in cfg.teacher.members]
    return cfg


def _train(runs: list[tuple[str, str]]) -> list[dict]:
    """In the worker: configs travel as JSON (ConfigDicts with references do not pickle)."""
    from absl import logging

    from mmkd_jax.train import trainer
    handler = logs.log_to_file(runs[0][1])
    try:
        return trainer.train_population([(_from_json(c), wd) for c, wd in runs])
    finally:
        logging.get_absl_logger().removeHandler(handler)


def submit(pool: concurrent.futures.Executor | None, job: Job,
           train_fn: Callable[[Job], list[dict]]) -> concurrent.futures.Future:
    """Runs `job` in `pool`, or here and now when `pool` is None (a finished future)."""
    if pool is None:
        future = concurrent.futures.Future()
        future.set_result(train_fn(job))
        return future
    for cfg, _ in job:
        # Datasets build on first use: here, once, not in two workers racing for one folder.
        pipeline.label_names(cfg.data)
    return pool.submit(_train, [(c.to_json(), wd) for c, wd in job])


def pool(workers: int) -> concurrent.futures.Executor | None:
    """A spawned process pool of `workers`, or None for in-process training (workers <= 1)."""
    if workers <= 1:
        return None
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
