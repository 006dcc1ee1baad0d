r"""Teacher: evaluate the logit average of trained members on the eval split.

  python -m mmkd_jax.main --config=configs/teacher.py --workdir=/tmp/mmkd/distill
  python -m mmkd_jax.main --config=configs/teacher.py:ssv2,teacher=rgb+layout --workdir=DIR

Members are looked up in WORKDIR/members/baseline_* (the layout configs/distill.py uses), so
pointing it at a distillation workdir evaluates that run's teacher.
"""
import os

from mmkd_jax import recipes

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str | None = None):
    preset, opts = recipes.parse_options(arg, teacher="rgb+flow+layout")
    config = recipes.base_config(preset, modality="rgb")
    names = opts["teacher"].split("+")
    config.trainer = "evaluate"
    config.experiment = "teacher_" + "_".join(names)
    config.teacher.members = recipes.teacher_members(names, preset, CONFIG_DIR)
    return config
