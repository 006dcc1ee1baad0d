"""`something_synthetic`: the built-in procedural dataset (docs/datasets.md), no download needed.

Hand/object clips under 14 SSv2-like templates in two action groups, objects from two sets (A
warm, B cool). Configs: `standard` (every group/set pair in both splits) and `compositional`
(train 1A + 2B, validation 1B + 2A), each also as `<kind>_tiny`. Any size/seed/resolution builds
under its own name `<kind>_n<train>_v<validation>_s<seed>_px<frame>_t<frames>`:

    tfds build data_prep/something_synthetic --config=compositional --data_dir=/data/tfds
    tfds build data_prep/something_synthetic --config=standard_n2000_v500_s3_px48_t16 ...
    tfds build data_prep/something_synthetic --data_dir=... \
        --config='{"kind": "compositional", "knobs": {"pixel_noise": 10}}'

(`python -m data_prep build ...` takes the same arguments.) Frames come from
`data_prep.synthetic.render`, flow from the project's flow function, boxes through the same
normalisation as Something-Else boxes. Records are a pure function of the config (seeded).
"""
import collections
import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_prep import schema
from data_prep.builder_base import ReportedBuilder
from data_prep.synthetic import actions as act
from data_prep.synthetic.generate import ClipJob, make_record
from data_prep.synthetic.knobs import Knobs
from mmkd_jax.data.flow import FLOW_METHODS

DEFAULT_FLOW = "farneback"  # as accurate as DIS on these small frames, ~6x faster (see docs)
_NAME = re.compile(r"^(standard|compositional)_n(\d+)_v(\d+)_s(\d+)_px(\d+)_t(\d+)"
                   rf"(?:_({'|'.join(FLOW_METHODS)}))?$")


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticConfig(tfds.core.BuilderConfig):
    """Size, seed and rendering of a synthetic config; `name` is derived when left empty."""

    name: str = ""
    kind: str = "standard"  # "standard" or "compositional"
    num_train: int = 3500  # 250 clips per class
    num_validation: int = 1050  # 75 per class
    seed: int = 0
    frame_size: int = 48  # square frames, px
    num_frames: int = 16  # rendered frames per clip (models sample 8)
    flow_method: str = DEFAULT_FLOW
    knobs: dict = dataclasses.field(default_factory=dict)  # overrides of synthetic.knobs.Knobs
    num_workers: int = 0  # 0: $MMKD_DATA_WORKERS or the CPU count; does not change the data

    def __post_init__(self):
        if self.kind not in act.SPLIT_KINDS:
            raise ValueError(f"kind must be one of {act.SPLIT_KINDS}, got {self.kind!r}")
        if self.flow_method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {self.flow_method!r}")
        if min(self.num_train, self.num_validation) < 1:
            raise ValueError("num_train and num_validation must be >= 1 (TFDS cannot write an "
                             "empty split)")
        Knobs.from_dict(self.knobs)  # validate early
        if not self.name:
            self.name = encode_name(self)

    @property
    def render_knobs(self) -> Knobs:
        return Knobs.from_dict(self.knobs)


def encode_name(c: SyntheticConfig) -> str:
    """Every field that changes the data goes into the name, so no two configs share a dir."""
    name = (f"{c.kind}_n{c.num_train}_v{c.num_validation}_s{c.seed}_px{c.frame_size}"
            f"_t{c.num_frames}")
    if c.flow_method != DEFAULT_FLOW:
        name += f"_{c.flow_method}"
    digest = Knobs.from_dict(c.knobs).digest()
    return name + (f"_k{digest}" if digest else "")


def config_from_name(name: str) -> SyntheticConfig | None:
    m = _NAME.match(name)
    if m is None:
        return None
    kind, n, v, s, px, t, flow = m.groups()
    return SyntheticConfig(name=name, kind=kind, num_train=int(n), num_validation=int(v),
                           seed=int(s), frame_size=int(px), num_frames=int(t),
                           flow_method=flow or DEFAULT_FLOW)


TINY = {"num_train": 56, "num_validation": 28}  # 4 / 2 clips per class: tests and smoke runs
PRESETS = [
    SyntheticConfig(name="standard", kind="standard",
                    description="every action group with every object set, in both splits"),
    SyntheticConfig(name="compositional", kind="compositional",
                    description="train 1A + 2B, validation 1B + 2A (Something-Else style)"),
    SyntheticConfig(name="standard_tiny", kind="standard", **TINY, description="tiny standard"),
    SyntheticConfig(name="compositional_tiny", kind="compositional", **TINY,
                    description="tiny compositional"),
]


class Builder(ReportedBuilder):
    """Procedural hand/object action clips with RGB, flow and box modalities."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "14 actions in 2 groups, object sets A/B, standard/compositional."}
    BUILDER_CONFIGS = PRESETS

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig | None:
        return super().get_builder_config(name, version) or config_from_name(name)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        first, other = ("A", "B") if c.kind == "compositional" else ("AB", "AB")
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=schema.features(),
            metadata=tfds.core.MetadataDict(
                label_names=list(act.LABEL_NAMES),
                action_groups=list(act.GROUPS),
                partners=list(act.PARTNER),
                group_object_sets={"train": {"1": first, "2": other},
                                   "validation": {"1": other, "2": first}},
                config={k: v for k, v in dataclasses.asdict(c).items()
                        if k in ("kind", "num_train", "num_validation", "seed", "frame_size",
                                 "num_frames", "flow_method")},
                knobs=dataclasses.asdict(c.render_knobs)))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        c = self.builder_config
        return {"train": self._generate_examples(split="train", count=c.num_train, offset=0),
                "validation": self._generate_examples(split="validation",
                                                      count=c.num_validation,
                                                      offset=c.num_train)}

    def _generate_examples(self, split: str, count: int, offset: int):
        c = self.builder_config
        knobs = c.render_knobs
        jobs = [ClipJob(c.kind, split, i, offset + i, c.seed, c.frame_size, c.num_frames,
                        c.flow_method, knobs) for i in range(count)]
        return self._records(split, make_record, jobs)

    def _finish_report(self) -> None:
        stats = {split: split_statistics(facts) for split, facts in self.facts.items()}
        self.report.info["statistics"] = stats
        self.info.metadata["statistics"] = stats
        for split, st in stats.items():
            logging.info(
                "%s %s: %d clips, %d-%d per class, group/object set %s, object travel %.3f, "
                "hand travel %.3f (frame sides), %.2f boxes/frame, %.0f%% frames annotated, "
                "%.1f%% of flow pixels moving at %.2f px/frame", self.builder_config.name,
                split, st["clips"], min(st["per_class"]), max(st["per_class"]),
                st["group_object_set"], st["object_travel"], st["hand_travel"],
                st["boxes_per_frame"], 100 * st["annotated_frames"],
                100 * st["flow_moving_fraction"], st["flow_speed_moving"])


def split_statistics(facts: list[dict]) -> dict:
    """Class counts, group x object-set counts and motion/box averages of one split."""
    if not facts:
        return {}
    pairs = collections.Counter(f"{f['group']}{f['object_set']}" for f in facts)
    mean = lambda key: round(float(np.mean([f[key] for f in facts])), 4)
    return {
        "clips": len(facts),
        "per_class": [sum(f["label"] == i for f in facts) for i in range(act.NUM_CLASSES)],
        "group_object_set": dict(sorted(pairs.items())),
        "object_travel": mean("object_travel"),
        "hand_travel": mean("hand_travel"),
        "boxes_per_frame": mean("num_boxes"),
        "annotated_frames": mean("annotated"),
        "flow_moving_fraction": mean("flow_moving"),
        "flow_speed_moving": mean("flow_speed"),
    }
