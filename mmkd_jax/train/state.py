"""Parameter initialisation on the mesh, and the abstract trees checkpoints restore into."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from mmkd_jax import models


def dummy_batch(data_cfg: ml_collections.ConfigDict, batch_size: int = 1) -> dict:
    """Zeros shaped like a pipeline batch (docs/architecture.md §2), every key present."""
    t, s, k = data_cfg.num_frames, data_cfg.image_size, data_cfg.num_boxes
    video = lambda c: jnp.zeros((batch_size, t, s, s, c), jnp.float32)
    return {"rgb": video(3), "flow": video(data_cfg.flow_channels), "omni": video(3),
            "boxes": jnp.zeros((batch_size, t, k, 4), jnp.float32),
            "categories": jnp.zeros((batch_size, t, k), jnp.int32),
            "label": jnp.zeros((batch_size,), jnp.int32),
            "mask": jnp.ones((batch_size,), jnp.float32)}


def init_params(module, modality: str, data_cfg: ml_collections.ConfigDict, rng, sharding):
    """Initialises params directly on `sharding` (no host round trip for large models)."""
    inputs = models.model_inputs(modality, dummy_batch(data_cfg))

    @jax.jit
    def init(rng):
        return module.init({"params": rng, "dropout": rng}, *inputs, train=False)["params"]

    return jax.jit(init, out_shardings=sharding)(rng)


def abstract_params(module, modality: str, data_cfg: ml_collections.ConfigDict, sharding):
    inputs = models.model_inputs(modality, dummy_batch(data_cfg))
    shapes = jax.eval_shape(
        lambda: module.init({"params": jax.random.key(0)}, *inputs, train=False)["params"])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        shapes)
