"""`video_folder`: your own videos, listed in a CSV or JSON file, as records like SSv2's.

Build (a folder holding `videos.csv` or `videos.json`, see `data_prep.video_list`):

    python -m data_prep build data_prep/video_folder --config=mine --manual_dir=/data/mine \
        --data_dir=/data/tfds

then train on it with `--config.data.name=video_folder/mine --config.data.data_dir=/data/tfds`.
The config name is yours (one per dataset, so several live side by side in one data dir); a
name ending in `_farneback` or `_tvl1` computes missing flow with that method instead of DIS.
A JSON config names the list file directly: `--config='{"name": "mine", "list_file":
"/data/mine/list.csv"}'` (paths in the list are relative to the list's folder).

Every video goes through the same record path as the SSv2 builder (decode, released flow or
computed flow, Something-Else boxes, JPEG frames) and the same per-reason build report.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import tensorflow_datasets as tfds

from data_prep import manual_files, real_videos, video_list
from data_prep.video_builder import VideoConfig, VideoDatasetBuilder
from mmkd_jax.data.flow import FLOW_METHODS

MANUAL_LAYOUT = """\
<manual_dir>/
  videos.csv (or videos.json)   one row per video: video,label[,split][,id][,flow]
      video: a video file (webm, mp4, avi, ...) or a folder of frame images, relative to the
             list's folder; split: train (default), validation, test (label may be empty) ...
  labels.json or labels.txt     optional label map ({name: id} or one name per line);
                                default: the sorted unique labels of the list
  bounding_box_smthsmth_part*.json   optional boxes in the Something-Else format, keyed by id
  flow/<id>/flow_{x,y}_%05d.jpg      optional released TSN flow (or the row's flow column)
Without released flow, flow is computed with the config's method (dis | farneback | tvl1)."""
_CONFIG_NAME = re.compile(r"^[A-Za-z]\w*$")


@dataclasses.dataclass(eq=False, kw_only=True)
class VideoFolderConfig(VideoConfig):
    # The video list: absolute, or relative to the manual dir; "" = videos.csv / videos.json.
    list_file: str = ""


def config_from_name(name: str) -> VideoFolderConfig | None:
    """`mine` (DIS flow), `mine_tvl1` / `mine_farneback`, or a JSON object of config fields."""
    if name.lstrip().startswith("{"):
        fields = json.loads(name)
        allowed = {f.name for f in dataclasses.fields(VideoFolderConfig)}
        unknown = set(fields) - allowed
        if unknown or not _CONFIG_NAME.match(str(fields.get("name", ""))):
            raise ValueError(f"video_folder config {name!r}: needs a 'name' (letters, digits, "
                             f"_) and only fields of {sorted(allowed)}; unknown {sorted(unknown)}")
        return VideoFolderConfig(**fields)
    if not _CONFIG_NAME.match(name):
        return None
    method = next((m for m in FLOW_METHODS if name.endswith(f"_{m}")), "dis")
    return VideoFolderConfig(name=name, flow_method=method,
                             description=f"custom video list, {method} flow where not released")


class Builder(VideoDatasetBuilder):
    """Videos named in a CSV/JSON list (any labels, any splits)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Custom video lists in the SSv2 record layout."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_LAYOUT
    DESCRIPTION = __doc__
    BUILDER_CONFIGS = [VideoFolderConfig(name="default", flow_method="dis",
                                         description="videos.csv/json of the manual dir")]

    @classmethod
    def config_from_name(cls, name: str) -> VideoConfig | None:
        return config_from_name(name)

    def _split_files(self, manual_dir: str) -> manual_files.SplitFiles:
        # The SSv2 label/split files do not exist here: _split_generators reads the video list.
        raise NotImplementedError("video_folder reads a video list, see data_prep/video_list.py")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        manual_dir = None if os.path.isabs(cfg.list_file) else os.fspath(dl_manager.manual_dir)
        list_path = video_list.find_list_file(cfg.list_file, manual_dir)
        base = os.path.dirname(list_path)
        entries = video_list.load_video_list(list_path)
        label_names, label_file = video_list.load_labels(list_path, entries)
        label_ids = {name: i for i, name in enumerate(label_names)}
        box_files = manual_files.find_box_files(base)
        boxes = manual_files.load_boxes(box_files) if box_files else None

        seen: set[str] = set()
        jobs: dict[str, list[real_videos.VideoJob]] = {}
        for e in entries:
            split_jobs = jobs.setdefault(e.split, [])
            vid = e.video_id
            if vid in seen:
                self.report.add("duplicate_video", vid, f"again in row {e.row}", e.split)
                continue
            seen.add(vid)
            label = label_ids.get(e.label, -1)
            if label < 0 and (e.split != video_list.UNLABELLED_SPLIT or e.label):
                self.report.add("unknown_template", vid,
                                f"row {e.row}: label {e.label!r} not in the label map", e.split)
                if e.split != video_list.UNLABELLED_SPLIT:
                    continue
            if not os.path.exists(e.video_path):
                self.report.add("video_missing", vid, e.video_path, e.split)
                continue
            flow_dir = e.flow_dir or manual_files.find_flow_dir(base, vid)
            if flow_dir is not None and not os.path.isdir(flow_dir):
                self.report.add("flow_unreadable", vid,
                                f"row {e.row}: flow folder {flow_dir} missing: flow computed",
                                e.split)
                flow_dir = None
            split_jobs.append(real_videos.VideoJob(
                video_id=vid, label=label, template=e.label if label >= 0 else "",
                video_path=e.video_path, flow_dir=flow_dir,
                box_frames=self.box_frames(boxes, vid, e.split), flow_method=cfg.flow_method))
        self.report_unknown_box_videos(boxes, seen)
        self.drop_empty_splits(jobs, f"{list_path}: no usable video in any split")

        self.info.metadata["label_names"] = label_names
        self.info.metadata["source_files"] = {
            "list": list_path, "labels": label_file,
            "boxes": [os.path.relpath(p, base) for p in box_files]}
        return {split: self._generate_examples(split=split, jobs=split_jobs)
                for split, split_jobs in jobs.items()}
