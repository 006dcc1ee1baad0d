"""Shared TFDS builder for released Something-Something videos (SSv2 and Something-Else).

The two datasets differ only in which label map and split lists they read (`_split_files`);
videos, released flow and Something-Else boxes come from the same manual dir. All file parsing
happens in `_split_generators`, before any record is written, so an unusable labels or split file
stops the build with an error naming it; problems with single videos are reported, not raised.
"""
import abc
import collections
import dataclasses
import os

import tensorflow_datasets as tfds
from absl import logging

from data_prep import manual_files, real_videos, schema
from data_prep.builder_base import ReportedBuilder
from data_prep.report import DatasetFileError
from mmkd_jax.data.flow import FLOW_METHODS

MANUAL_LAYOUT = """\
<manual_dir>/
  20bn-something-something-v2/{id}.webm      released videos (VP9 webm, 12 fps)
  labels/labels.json, train.json, validation.json[, test.json, test-answers.csv]
      (or the older something-something-v2-{labels,train,validation,test}.json names)
  compositional/{labels,train,validation}.json      Something-Else compositional split
  bounding_box_smthsmth_part{1..4}.json             optional Something-Else boxes
  flow/{id}/flow_{x,y}_%05d.jpg                     optional released TSN flow
Without released flow, flow is computed with the config's method (dis | farneback | tvl1)."""


@dataclasses.dataclass(eq=False, kw_only=True)
class VideoConfig(tfds.core.BuilderConfig):
    flow_method: str = "dis"  # used where no released flow is given
    layout: str = ""  # Something-Else split layout folder ("compositional"); "" for SSv2
    num_workers: int = 0  # 0: $MMKD_DATA_WORKERS or the CPU count; does not change the data


class VideoDatasetBuilder(ReportedBuilder):
    """Something-Something videos -> one record per video with RGB, flow and boxes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "RGB, TSN flow and Something-Else boxes in one record per video."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_LAYOUT
    DESCRIPTION = ""

    @abc.abstractmethod
    def _split_files(self, manual_dir: str) -> manual_files.SplitFiles:
        """Which label map and split lists this dataset reads."""

    @classmethod
    def config_from_name(cls, name: str) -> VideoConfig | None:
        """A config for a name outside BUILDER_CONFIGS (e.g. another flow method), or None."""
        return None

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig | None:
        # Lets `--config=tvl1` (CLI) and `builders.load("<name>/tvl1")` name unlisted configs.
        return super().get_builder_config(name, version) or cls.config_from_name(name)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.DESCRIPTION, features=schema.features(),
            metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        files = self._split_files(manual_dir)
        label_names = manual_files.load_label_names(files.label_file)
        label_ids = {t: i for i, t in enumerate(label_names)}
        answers = {}
        if files.test_answers and "test" in files.splits:
            answers = manual_files.load_test_answers(files.test_answers)
        entries = {s: manual_files.load_split_list(p) for s, p in files.splits.items()}
        box_files = manual_files.find_box_files(manual_dir)
        boxes = manual_files.load_boxes(box_files) if box_files else None

        cfg = self.builder_config
        seen: set[str] = set()
        jobs: dict[str, list[real_videos.VideoJob]] = {}
        for split, items in entries.items():
            jobs[split] = []
            for item in items:
                vid = item["id"]
                template = item.get("template") or answers.get(vid, "")
                if vid in seen:
                    self.report.add("duplicate_video", vid, f"again in {split}", split)
                    continue
                seen.add(vid)
                label = label_ids.get(template, -1)
                if label < 0 and (split != "test" or template):
                    self.report.add("unknown_template", vid, repr(template), split)
                    if split != "test":
                        continue
                path = manual_files.find_video(manual_dir, vid)
                if path is None:
                    self.report.add("video_missing", vid, f"{manual_files.VIDEO_DIR}/{vid}.webm",
                                    split)
                    continue
                jobs[split].append(real_videos.VideoJob(
                    video_id=vid, label=label, template=template, video_path=path,
                    flow_dir=manual_files.find_flow_dir(manual_dir, vid),
                    box_frames=self.box_frames(boxes, vid, split), flow_method=cfg.flow_method))
        self.report_unknown_box_videos(boxes, seen)
        self.drop_empty_splits(jobs, f"{manual_dir}: no usable video for any split (videos are "
                                     f"read from {manual_files.VIDEO_DIR}/)")

        self.info.metadata["label_names"] = label_names
        self.info.metadata["source_files"] = {
            "labels": os.path.relpath(files.label_file, manual_dir),
            "splits": {s: os.path.relpath(p, manual_dir) for s, p in files.splits.items()},
            "boxes": [os.path.relpath(p, manual_dir) for p in box_files]}
        return {split: self._generate_examples(split=split, jobs=split_jobs)
                for split, split_jobs in jobs.items()}

    def _generate_examples(self, split: str, jobs: list[real_videos.VideoJob]):
        return self._records(split, real_videos.make_record, jobs)

    def _finish_report(self) -> None:
        flow = collections.Counter(f["flow"] for facts in self.facts.values() for f in facts)
        frames = [f["frames"] for facts in self.facts.values() for f in facts]
        self.report.info["flow_sources"] = dict(flow)
        if frames:
            self.report.info["frames_per_video"] = {
                "min": min(frames), "mean": round(sum(frames) / len(frames), 2),
                "max": max(frames)}
        self.info.metadata["flow_sources"] = dict(flow)

    def box_frames(self, boxes: dict | None, vid: str, split: str):
        """The video's per-frame boxes, or None; a video the box files miss is reported."""
        if boxes is None:
            return None
        frames = boxes.get(vid)
        if frames is None:
            self.report.add("boxes_missing", vid, "", split)
        return frames

    def report_unknown_box_videos(self, boxes: dict | None, seen: set) -> None:
        for vid in sorted(set(boxes or ()) - seen):
            self.report.add("boxes_unknown_video", vid, "named in the box files")

    def drop_empty_splits(self, jobs: dict, none_usable: str) -> None:
        """TFDS cannot write an empty split: leave out (and report) splits with no usable
        video; stop with `none_usable` (+ the report's counts) when no split has one."""
        empty = [split for split, split_jobs in jobs.items() if not split_jobs]
        if len(empty) == len(jobs):
            raise DatasetFileError(f"{none_usable}: {self.report.counts()}")
        for split in empty:
            logging.warning("%s: split %s has no usable video; it is left out", self.name, split)
            self.report.info.setdefault("empty_splits", []).append(split)
            del jobs[split]



def flow_config(name: str, layout: str = "") -> VideoConfig | None:
    """`<layout>_<method>` (or `<method>` without layout) -> VideoConfig, else None."""
    prefix = f"{layout}_" if layout else ""
    method = name[len(prefix):] if name.startswith(prefix) else None
    if method in FLOW_METHODS:
        return VideoConfig(name=name, flow_method=method, layout=layout)
    return None
