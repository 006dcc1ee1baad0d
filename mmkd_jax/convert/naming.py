"""Explicit name maps: regex rules from a checkpoint's keys to our "/"-separated param paths."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import numpy as np
from flax import traverse_util

Transform = Callable[[np.ndarray], np.ndarray]

ident: Transform = lambda a: a
linear: Transform = lambda a: a.T  # PyTorch Linear (out, in) -> flax Dense (in, out)
conv: Transform = lambda a: a.transpose(2, 3, 1, 0)  # PyTorch OIHW -> flax HWIO


class Rule(NamedTuple):
    pattern: str  # full-match regex on the checkpoint key
    target: str  # our path; may use \1.. group references
    transform: Transform = ident


def rename(state: Mapping[str, np.ndarray], rules: Iterable[Rule]
           ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Applies the first matching rule to every key; returns (ours, unused checkpoint keys)."""
    compiled = [(re.compile(r.pattern), r.target, r.transform) for r in rules]
    ours: dict[str, np.ndarray] = {}
    unused = []
    for key, value in state.items():
        for regex, target, fn in compiled:
            m = regex.fullmatch(key)
            if m:
                ours[m.expand(target)] = fn(np.asarray(value))
                break
        else:
            unused.append(key)
    return ours, sorted(unused)


def torch_linear(ours: str, theirs: str) -> list[Rule]:
    """Rules for a PyTorch Linear `theirs.{weight,bias}` -> Dense `ours/{kernel,bias}`."""
    return [Rule(rf"{theirs}\.weight", f"{ours}/kernel", linear),
            Rule(rf"{theirs}\.bias", f"{ours}/bias")]


def torch_layernorm(ours: str, theirs: str) -> list[Rule]:
    return [Rule(rf"{theirs}\.weight", f"{ours}/scale"), Rule(rf"{theirs}\.bias", f"{ours}/bias")]


def flatten(params: Mapping) -> dict[str, np.ndarray]:
    return traverse_util.flatten_dict(params, sep="/")


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def strip_prefix(state: Mapping[str, np.ndarray], prefixes: Iterable[str]) -> dict:
    """Drops a wrapper prefix (e.g. "module.") when every key carries it."""
    state = dict(state)
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state
