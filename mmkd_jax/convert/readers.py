"""Checkpoint readers: every format becomes a flat {name: float32 np.ndarray} dict.

safetensors and npz need no torch; torch pickles (.bin/.pt/.pth) import torch lazily.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Hugging Face `save_pretrained` file names, preferred first.
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


def to_numpy(value: Any) -> np.ndarray:
    """A numpy / torch / jax array as a numpy array (floats as float32)."""
    if hasattr(value, "detach"):  # torch.Tensor: bf16 has no numpy dtype, go through float32
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        value = value.numpy()
    array = np.asarray(value)
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def _unwrap(state: Mapping[str, Any]) -> Mapping[str, Any]:
    # Training scripts often save {"model": sd} or {"state_dict": sd}.
    for key in ("state_dict", "model", "module"):
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def load_torch(path: str) -> dict[str, np.ndarray]:
    import torch  # only torch pickles need torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: to_numpy(v) for k, v in _unwrap(state).items() if hasattr(v, "shape")}


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: to_numpy(v) for k, v in load_file(path).items()}


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: to_numpy(data[k]) for k in data.files}


def load_file(path: str) -> dict[str, np.ndarray]:
    """Reads a .safetensors, .npz or torch file into a flat dict of arrays."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    if path.endswith(".npz"):
        return load_npz(path)
    if path.endswith(TORCH_SUFFIXES):
        return load_torch(path)
    raise ValueError(f"unrecognised checkpoint file {path!r} (want .safetensors, .npz or "
                     f"one of {TORCH_SUFFIXES})")


def load_hf_dir(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Weights and config.json of a `save_pretrained` directory (or a single weights file)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return load_file(path), None
    config = None
    if os.path.exists(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
    for name in HF_WEIGHT_FILES:
        file = os.path.join(path, name)
        if not os.path.exists(file):
            continue
        if name.endswith(".index.json"):  # sharded checkpoint
            with open(file) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state: dict[str, np.ndarray] = {}
            for shard in shards:
                state.update(load_file(os.path.join(path, shard)))
            return state, config
        return load_file(file), config
    raise FileNotFoundError(f"no weights ({', '.join(HF_WEIGHT_FILES)}) in {path}")


def as_state(path_or_state: Any) -> dict[str, np.ndarray]:
    """A path or an in-memory state dict (torch tensors or arrays) as numpy arrays."""
    if isinstance(path_or_state, Mapping):
        return {k: to_numpy(v) for k, v in _unwrap(path_or_state).items() if hasattr(v, "shape")}
    return load_file(path_or_state)
