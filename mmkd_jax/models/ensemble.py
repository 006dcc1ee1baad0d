"""The frozen teacher: the average of its members' logits."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmkd_jax.models.registry import model_inputs

Member = tuple[nn.Module, Any, str]  # (module, params, modality)


def _variables(params: Any) -> Any:
    # Accept either a bare params tree or a full {"params": ...} variables dict.
    return params if isinstance(params, Mapping) and "params" in params else {"params": params}


def ensemble_logits(members: Sequence[Member], batch: Mapping[str, Any]) -> jnp.ndarray:
    """Mean of the members' float32 logits, each run with `train=False` on its modality.

    Gradients never flow into the teacher (`stop_gradient`), so it can sit inside the
    student's jitted loss.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    total = None
    for module, params, modality in members:
        logits = module.apply(_variables(params), *model_inputs(modality, batch), train=False)
        logits = logits.astype(jnp.float32)
        total = logits if total is None else total + logits
    return jax.lax.stop_gradient(total / len(members))
