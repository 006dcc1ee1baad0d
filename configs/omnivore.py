r"""Omnivore: one RGB TimeSformer trained on all modalities, one sampled per video, 3x longer.

Flow is shown as 3 channels and boxes as 2-px rectangles on white (hand blue, objects red);
evaluation uses RGB frames only, like the student.

  python -m mmkd_jax.main --config=configs/omnivore.py --workdir=/tmp/mmkd/omnivore
  python -m mmkd_jax.main --config=configs/omnivore.py:ssv2 --workdir=DIR \
      --config.model.init_from.path=/path/to/ViT-B_16.npz
"""
from mmkd_jax import recipes


def get_config(arg: str | None = None):
    config = recipes.base_config(arg, modality="omni")
    config.experiment = "omnivore"
    config.epochs *= 3
    return config
