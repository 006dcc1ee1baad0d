"""Loading converted weights into a freshly initialised TimeSformer, with shape surgery.

`load_into` copies every parameter whose name matches; where only the shape differs it adapts
`pos_embed` (bilinear grid resampling), `time_embed` (nearest in time) and the patch kernel
(channel count), and otherwise keeps the fresh init (e.g. a head with another class count).
Everything it did is listed in a `ConversionReport`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmkd_jax.convert.naming import flatten, unflatten
from mmkd_jax.models.timesformer import nearest_indices


@dataclasses.dataclass
class ConversionReport:
    """missing: model params not loaded (kept from init); unused: checkpoint entries not used;
    reshaped: params loaded with shape surgery."""

    missing: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    reshaped: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = []
        for name in ("missing", "unused", "reshaped"):
            items = getattr(self, name)
            lines.append(f"{name} ({len(items)}):" + "".join(f"\n  {i}" for i in items))
        return "\n".join(lines)


def resample_grid(posemb: np.ndarray, new_grid: tuple[int, int],
                  old_grid: tuple[int, int] | None = None) -> np.ndarray:
    """(N, D) grid position embeddings -> (new_h * new_w, D), bilinear (half-pixel centres)."""
    n, d = posemb.shape
    if old_grid is None:
        side = int(round(np.sqrt(n)))
        if side * side != n:
            raise ValueError(f"cannot infer a square grid from {n} position embeddings")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return posemb
    grid = jnp.asarray(posemb.reshape(*old_grid, d))
    out = jax.image.resize(grid, (*new_grid, d), method="linear", antialias=False)
    return np.asarray(out).reshape(-1, d)


def resample_pos_embed(pos: np.ndarray, new_shape: tuple[int, ...],
                       new_grid: tuple[int, int]) -> np.ndarray:
    """(1, 1 + N, D) with a leading cls entry -> `new_shape`; the cls entry is kept."""
    grid = resample_grid(pos[0, 1:], new_grid)
    return np.concatenate([pos[0, :1], grid], axis=0)[None].reshape(new_shape)


def resample_time_embed(time: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """(1, T, D) -> (1, T', D), nearest in time (as facebookresearch/TimeSformer loads it)."""
    return time[:, nearest_indices(time.shape[1], new_shape[1])]


def adapt_patch_kernel(kernel: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """(p, p, C, D) -> (p, p, C', D): the channel-mean kernel repeated, scaled by C / C'.

    An input whose channels are all equal then gives exactly the original response, so a
    grey-level (or flow) image starts from the RGB filters' luminance response.
    """
    if kernel.shape[:2] != tuple(new_shape[:2]) or kernel.shape[3] != new_shape[3]:
        raise ValueError(f"patch kernel {kernel.shape} cannot become {new_shape}")
    c_old, c_new = kernel.shape[2], new_shape[2]
    mean = kernel.mean(axis=2, keepdims=True)
    return np.repeat(mean, c_new, axis=2) * (c_old / c_new)


def _timesformer_adapters(module: Any) -> dict[str, Callable[[np.ndarray, tuple], np.ndarray]]:
    grid = module.grid
    return {
        "pos_embed": lambda a, shape: resample_pos_embed(a, shape, grid),
        "time_embed": resample_time_embed,
        "patch_embed/kernel": adapt_patch_kernel,
    }


def load_into(source: Mapping[str, np.ndarray], params: Any, module: Any,
              unused: list[str] | None = None) -> tuple[Any, ConversionReport]:
    """Overwrites `params` (a fresh init of `module`) with `source` ({path: array}).

    `unused` carries checkpoint keys the renaming step already could not place.
    """
    report = ConversionReport(unused=list(unused or []))
    adapters = _timesformer_adapters(module) if hasattr(module, "grid") else {}
    target = flatten(params)
    out = {}
    for path, init in target.items():
        shape = tuple(init.shape)
        if path not in source:
            report.missing.append(path)
            out[path] = init
            continue
        value = np.asarray(source[path], np.float32)
        if value.shape == shape:
            out[path] = jnp.asarray(value)
        elif path in adapters:
            out[path] = jnp.asarray(adapters[path](value, shape), jnp.float32)
            report.reshaped.append(f"{path}: {value.shape} -> {shape}")
        else:
            report.missing.append(f"{path} (checkpoint {value.shape} != model {shape}; "
                                  "kept from init)")
            report.unused.append(path)
            out[path] = init
    report.unused.extend(sorted(set(source) - set(target)))
    report.missing.sort()
    report.reshaped.sort()
    return unflatten(out), report
