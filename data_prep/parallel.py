"""Ordered process-pool map for the CPU-bound part of a build (decode, flow, JPEG).

Workers are *spawned*, never forked: the builder process may hold TensorFlow or JAX threads,
which do not survive a fork. Results come back in input order, so a build is the same whatever
the number of workers.
"""
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many items a pool's start-up (a second or two per worker) costs more than it saves.
MIN_ITEMS_FOR_POOL = 64
WORKERS_ENV = "MMKD_DATA_WORKERS"


def default_workers() -> int:
    """$MMKD_DATA_WORKERS if set, else the CPU count."""
    if os.environ.get(WORKERS_ENV):
        return max(1, int(os.environ[WORKERS_ENV]))
    return os.cpu_count() or 1


def _init_worker() -> None:
    import cv2

    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], num_workers: int | None = None,
                chunksize: int = 4, min_items: int = MIN_ITEMS_FOR_POOL) -> Iterator[R]:
    """`map(fn, items)` over `num_workers` spawned processes (in-process for small inputs)."""
    items = list(items)
    workers = default_workers() if num_workers is None else num_workers
    if workers <= 1 or len(items) < min_items:
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize)
