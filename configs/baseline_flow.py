r"""Optical-flow baseline: the same TimeSformer on flow frames (x, y), cross-entropy.

  python -m mmkd_jax.main --config=configs/baseline_flow.py --workdir=/tmp/mmkd/baseline_flow
  python -m mmkd_jax.main --config=configs/baseline_flow.py:ssv2 --workdir=DIR \
      --config.model.init_from.path=/path/to/ViT-B_16.npz
"""
from mmkd_jax import recipes


def get_config(arg: str | None = None):
    config = recipes.base_config(arg, modality="flow")
    config.experiment = "baseline_flow"
    config.model.in_channels = config.data.flow_channels
    return config
