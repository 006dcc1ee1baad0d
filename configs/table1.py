r"""Table 1 of the paper in miniature on the built-in synthetic dataset, both splits.

  python -m mmkd_jax.main --config=configs/table1.py --workdir=/tmp/mmkd/table1
  python -m mmkd_jax.main --config=configs/table1.py --workdir=/tmp/mmkd/table1 \
      --config.seeds=0,1,2
  python -m mmkd_jax.main --config=configs/table1.py:tiny --workdir=/tmp/mmkd/table1_tiny

Writes table1.md, table1.json and table1.png to the workdir; finished rows are reused.
"""
import os

import ml_collections

SPLITS = {
    "synthetic": {"standard": "synthetic", "compositional": "synthetic_compositional"},
    "tiny": {"standard": "tiny", "compositional": "tiny_compositional"},
}


def get_config(arg: str | None = None):
    size = arg or "synthetic"
    if size not in SPLITS:
        raise ValueError(f"configs/table1.py:{size}: choose one of {sorted(SPLITS)}.")
    config = ml_collections.ConfigDict()
    config.trainer = "table1"
    config.config_dir = os.path.dirname(os.path.abspath(__file__))
    config.splits = SPLITS[size]
    config.seeds = (0,)
    # Overrides applied to every run of the table, e.g. "epochs=2,data.num_frames=4".
    config.overrides = ""
    # Most runs trained together in one step (0 = no limit): a row's seeds, all students. Lower
    # it for models too large for several copies per device.
    config.population_size = 0
    # Stages that do not depend on each other train side by side in this many processes
    # (mmkd_jax/train/workers.py); 0: one per CPU core on a CPU-only run, else 1.
    config.workers = 0
    return config
