"""Keep freed host memory in the process on CPU-only runs, so XLA:CPU steps do not page-fault.

XLA:CPU allocates each step's temporaries as one block (2.3 GB for a ViT-B/16 8x224 train step
at batch 1) from a worker thread. glibc serves a block that large from a fresh `mmap` and
returns it with `munmap` when the step ends, so every step touches new pages: 613k minor page
faults and ~1.3 s of kernel time per ViT-B step on 2 cores, 3.9-7.2 s when another large
process shares the machine (docs/benchmarks.md, "What moved the numbers"). PyTorch's
per-tensor allocations stay under glibc's mmap threshold and barely fault.

`keep_freed_memory()` sets glibc's `mallopt` so that freed memory is reused instead: one arena
for all threads (a thread arena cannot hold a block over 64 MB and would mmap it anyway), no
mmap for large blocks, no trimming of the heap top. The process keeps its peak footprint,
which a training loop reaches every step anyway. It is applied by the entry points
(`mmkd_jax.main`, the benchmarks) before any thread starts, only when JAX will run on the
CPU: GPU/TPU hosts keep their device memory in XLA's own allocator, and their input pipelines
keep glibc's per-thread arenas. `MMKD_HOST_MALLOC=default` turns it off.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

ENV = "MMKD_HOST_MALLOC"


def cpu_only() -> bool:
    """Whether JAX will run on the CPU: JAX_PLATFORMS says so, or no accelerator is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] == "cpu"
    plugins = importlib.metadata.entry_points(group="jax_plugins")
    return not plugins and importlib.util.find_spec("libtpu") is None


def keep_freed_memory(force: bool = False) -> bool:
    """glibc: reuse freed memory instead of returning it to the OS. True if applied.

    Call before threads start (the first lines of an entry point): a thread that already has
    its own malloc arena keeps it. Skipped off glibc, off CPU-only runs (unless `force`), and
    when MMKD_HOST_MALLOC=default.
    """
    if os.environ.get(ENV, "").strip().lower() == "default":
        return False
    if not force and not cpu_only():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only (musl has no mallopt)
    except (OSError, AttributeError):
        return False
    # M_TRIM_THRESHOLD takes an int; glibc stores it as size_t, so -1 means "never trim".
    return all(libc.mallopt(p, v) == 1 for p, v in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
