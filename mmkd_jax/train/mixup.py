"""Mixed views for distillation (function matching): every modality of one mixed clip.

"Patient and consistent" teaching (Beyer et al., CVPR 2022, the recipe the paper follows) gives
teacher and student the same view of every example, and its strongest views are mixup: the
student matches the teacher's function on images no label describes. Here a clip is mixed with
another clip of the batch, and every modality gets the same mix, so the teacher's members still
see one consistent scene:
  rgb, flow   lam * x + (1 - lam) * x[perm]  (per clip, lam ~ Beta(alpha, alpha))
  boxes       the boxes of both clips, side by side in each frame (2K slots; STLT masks the
              padding slots, so the order of slots does not matter), i.e. every object of the
              overlaid scene
The ground-truth term becomes lam * CE(y) + (1 - lam) * CE(y[perm]). `config.distill.mixup`
is alpha; 0 turns it off (the paper's views: crops only). Baselines never mix.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmkd_jax.train import losses

# Separates the mixing stream from the dropout stream of the same seed.
_STREAM = 0x6D6978


def rng(seed: int, step: jnp.ndarray) -> jax.Array:
    """The mixing key of a data stream's `seed` at `step`: equal for every model on it."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAM), step)


def mix(batch: dict, key: jax.Array, alpha: float) -> dict:
    """The batch with every model input mixed (module docstring), plus `mix_lam` (B,) and
    `mix_label` (B,) for the ground-truth term."""
    b = batch["label"].shape[0]
    k_perm, k_lam = jax.random.split(key)
    perm = jax.random.permutation(k_perm, b)
    lam = jax.random.beta(k_lam, alpha, alpha, (b,)).astype(jnp.float32)
    out = dict(batch)
    for name in ("rgb", "flow"):
        if name in batch:
            x = batch[name]
            w = lam.reshape((b,) + (1,) * (x.ndim - 1)).astype(x.dtype)
            out[name] = w * x + (1 - w) * x[perm]
    if "boxes" in batch:
        out["boxes"] = jnp.concatenate([batch["boxes"], batch["boxes"][perm]], axis=2)
        out["categories"] = jnp.concatenate([batch["categories"], batch["categories"][perm]],
                                            axis=2)
    out["mix_lam"], out["mix_label"] = lam, batch["label"][perm]
    return out


def cross_entropy(logits: jnp.ndarray, batch: dict) -> jnp.ndarray:
    """lam * CE(y) + (1 - lam) * CE(y[perm]) on a mixed batch; plain CE otherwise."""
    if "mix_lam" not in batch:
        return losses.cross_entropy(logits, batch["label"])
    lam = batch["mix_lam"]
    return (losses.cross_entropy(logits, batch["label"], lam)
            * jnp.sum(lam) / lam.shape[0]
            + losses.cross_entropy(logits, batch["mix_label"], 1 - lam)
            * jnp.sum(1 - lam) / lam.shape[0])
