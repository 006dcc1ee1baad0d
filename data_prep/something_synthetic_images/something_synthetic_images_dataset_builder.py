"""`something_synthetic_images`: still scenes of the synthetic world, for pretraining.

The miniature's ImageNet: one labelled still image per record, drawn by
`data_prep.synthetic.scenes` with its own seed stream, never a clip of `something_synthetic`.
Labels describe the picture (object shape, colour, texture, size and box; hand present and its
box; second object present), not an action. Configs: `default` (100,000 train, 2,000
validation) and `tiny` (tests); any size and seed build under `n<train>_v<validation>_s<seed>`:

    python -m data_prep build data_prep/something_synthetic_images --data_dir=/data/tfds
    python -m data_prep build data_prep/something_synthetic_images --config=n20000_v1000_s1 ...

It builds itself on first use, like `something_synthetic` (`configs/pretrain.py` reads it).
"""
import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds

from data_prep.builder_base import ReportedBuilder
from data_prep.synthetic import actions as act
from data_prep.synthetic import scenes

_NAME = re.compile(r"^n(\d+)_v(\d+)_s(\d+)$")
FRAME_SIZE = scenes.FRAME_SIZE


@dataclasses.dataclass(eq=False, kw_only=True)
class ScenesConfig(tfds.core.BuilderConfig):
    name: str = ""
    num_train: int = 100_000
    num_validation: int = 2_000
    seed: int = 0
    num_workers: int = 0  # 0: $MMKD_DATA_WORKERS or the CPU count; does not change the data

    def __post_init__(self):
        if min(self.num_train, self.num_validation) < 1:
            raise ValueError("num_train and num_validation must be >= 1")
        if not self.name:
            self.name = f"n{self.num_train}_v{self.num_validation}_s{self.seed}"


def config_from_name(name: str) -> ScenesConfig | None:
    m = _NAME.match(name)
    if m is None:
        return None
    n, v, s = (int(g) for g in m.groups())
    return ScenesConfig(name=name, num_train=n, num_validation=v, seed=s)


PRESETS = [
    ScenesConfig(name="default", description="100,000 train and 2,000 validation scenes"),
    ScenesConfig(name="tiny", num_train=256, num_validation=64, description="tests"),
]


def features() -> tfds.features.FeaturesDict:
    names = lambda values: [str(v) for v in values]
    return tfds.features.FeaturesDict({
        "scene_id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(FRAME_SIZE, FRAME_SIZE, 3), encoding_format="jpeg"),
        "shape": tfds.features.ClassLabel(names=list(act.SHAPES)),
        "colour": tfds.features.ClassLabel(names=names(scenes.COLOURS)),
        "texture": tfds.features.ClassLabel(names=list(scenes.TEXTURES)),
        "size": tfds.features.ClassLabel(num_classes=scenes.SIZE_BINS),
        "object_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "hand_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "has_hand": tfds.features.ClassLabel(num_classes=2),
        "has_second": tfds.features.ClassLabel(num_classes=2),
    })


class Builder(ReportedBuilder):
    """Labelled still scenes (no actions) from the synthetic renderer."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Scenes with object/hand attributes and boxes."}
    BUILDER_CONFIGS = PRESETS

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig | None:
        return super().get_builder_config(name, version) or config_from_name(name)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=features(),
            metadata=tfds.core.MetadataDict(
                object_size_range=list(scenes.OBJECT_SIZE),
                config={"num_train": c.num_train, "num_validation": c.num_validation,
                        "seed": c.seed, "frame_size": FRAME_SIZE}))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        c = self.builder_config
        return {"train": self._generate_examples("train", range(c.num_train)),
                "validation": self._generate_examples(
                    "validation", range(c.num_train, c.num_train + c.num_validation))}

    def _generate_examples(self, split: str, indices: range):
        jobs = [scenes.SceneJob(i, self.builder_config.seed, FRAME_SIZE) for i in indices]
        # The record maker lives in an importable module: spawned workers unpickle it by name
        # (`tfds build` imports this file as a top-level module).
        return self._records(split, scenes.make_record, jobs, key=lambda ex: ex["scene_id"])

    def _finish_report(self) -> None:
        self.report.info["statistics"] = {
            split: {"scenes": len(f), "with_hand": sum(x["has_hand"] for x in f),
                    "with_second_object": sum(x["has_second"] for x in f)}
            for split, f in self.facts.items()}
