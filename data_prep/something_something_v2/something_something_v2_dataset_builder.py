"""`something_something_v2`: SSv2 videos with RGB, TSN flow and Something-Else boxes per record.

Build (manual dir laid out as released, see `data_prep.video_builder.MANUAL_LAYOUT`):

    tfds build data_prep/something_something_v2 --manual_dir=/data/ssv2 --data_dir=/data/tfds

Splits train / validation (+ test when `test.json` is present; labels from `test-answers.csv`,
else -1). Where `flow/{id}/` is missing, flow is computed with DIS; `--config=tvl1` (fidelity) or
`--config=farneback` pick another method and build under their own config name. Problems met
(corrupt or missing videos, bad boxes, ...) are counted in `build_report.json` next to the data.
"""
from data_prep import manual_files
from data_prep.video_builder import VideoConfig, VideoDatasetBuilder, flow_config


class Builder(VideoDatasetBuilder):
    """Something-Something V2 (174 classes)."""

    DESCRIPTION = __doc__
    BUILDER_CONFIGS = [VideoConfig(name="dis", flow_method="dis",
                                   description="flow computed with DIS where not released")]

    @classmethod
    def config_from_name(cls, name: str) -> VideoConfig | None:
        return flow_config(name)

    def _split_files(self, manual_dir: str) -> manual_files.SplitFiles:
        return manual_files.ssv2_files(manual_dir)
