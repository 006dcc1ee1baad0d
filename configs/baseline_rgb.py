r"""RGB baseline: TimeSformer on RGB frames, cross-entropy (Table 1, row 1).

  python -m mmkd_jax.main --config=configs/baseline_rgb.py --workdir=/tmp/mmkd/baseline_rgb
  python -m mmkd_jax.main --config=configs/baseline_rgb.py:ssv2 --workdir=gs://.../rgb \
      --config.model.init_from.path=/path/to/ViT-B_16.npz
"""
from mmkd_jax import recipes


def get_config(arg: str | None = None):
    config = recipes.base_config(arg, modality="rgb")
    config.experiment = "baseline_rgb"
    return config
