r"""Layout baseline: STLT on object boxes and categories, cross-entropy.

  python -m mmkd_jax.main --config=configs/baseline_layout.py --workdir=/tmp/mmkd/baseline_layout
  python -m mmkd_jax.main --config=configs/baseline_layout.py:something_else --workdir=DIR
"""
from mmkd_jax import recipes


def get_config(arg: str | None = None):
    config = recipes.base_config(arg, modality="layout")
    config.experiment = "baseline_layout"
    return config
