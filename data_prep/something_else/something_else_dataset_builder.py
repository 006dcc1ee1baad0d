"""`something_else`: the Something-Else compositional split over the SSv2 videos, flow and boxes.

Build (the SSv2 manual dir plus `compositional/{labels,train,validation}.json`):

    tfds build data_prep/something_else --manual_dir=/data/ssv2 --data_dir=/data/tfds

Label ids come from `compositional/labels.json` (they differ from SSv2's); every record keeps its
template string. Flow as in `something_something_v2` (config `compositional` computes missing flow
with DIS; `compositional_tvl1` / `compositional_farneback` pick another method).
"""
from data_prep import manual_files
from data_prep.video_builder import VideoConfig, VideoDatasetBuilder, flow_config

# Split layouts = folders of {labels,train,validation}.json inside the manual dir; a config is
# `<layout>` (DIS flow) or `<layout>_<flow method>`. The few-shot splits slot in here later.
LAYOUTS = ("compositional",)


class Builder(VideoDatasetBuilder):
    """Something-Else (174 classes, compositional split)."""

    DESCRIPTION = __doc__
    BUILDER_CONFIGS = [VideoConfig(name="compositional", layout="compositional", flow_method="dis",
                                   description="compositional split, DIS flow where not released")]

    @classmethod
    def config_from_name(cls, name: str) -> VideoConfig | None:
        configs = (flow_config(name, layout) for layout in LAYOUTS)
        return next((c for c in configs if c is not None), None)

    def _split_files(self, manual_dir: str) -> manual_files.SplitFiles:
        return manual_files.something_else_files(manual_dir, self.builder_config.layout)
