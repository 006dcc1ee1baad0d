"""One record per released video: decode, check released flow (or compute it), boxes (no TF).

`make_record` runs in worker processes; it never raises for a bad video but returns the
problems it met (see data_prep.report.REASONS), so one corrupt file cannot stop a long build.
"""
import dataclasses
import glob
import os
import re

import cv2
import numpy as np

from data_prep import records
from data_prep.boxes import Problem, boxes_from_annotations
from data_prep.schema import MAX_BOXES
from mmkd_jax.data.video_io import VideoReadError, read_video

_FLOW_NUMBER = re.compile(r"flow_[xy]_(\d+)\.jpg$")


@dataclasses.dataclass(frozen=True)
class VideoJob:
    video_id: str
    label: int
    template: str
    video_path: str
    flow_dir: str | None  # released TSN flow folder, if any
    box_frames: list | None  # this video's Something-Else frame list, if any
    flow_method: str = "dis"
    max_boxes: int = MAX_BOXES


def _flow_files(flow_dir: str, axis: str) -> list[str]:
    files = [f for f in glob.glob(os.path.join(flow_dir, f"flow_{axis}_*.jpg"))
             if _FLOW_NUMBER.search(f)]
    return sorted(files, key=lambda f: int(_FLOW_NUMBER.search(f).group(1)))


def load_released_flow(flow_dir: str, num_frames: int, height: int, width: int, video_id: str
                       ) -> tuple[tuple[list[bytes], list[bytes]] | None, list[Problem]]:
    """Released `flow_{x,y}_%05d.jpg` -> JPEG bytes as given, or None (+ why) if unusable."""
    xs, ys = _flow_files(flow_dir, "x"), _flow_files(flow_dir, "y")
    if not len(xs) == len(ys) == num_frames - 1:
        return None, [("flow_frame_count_mismatch", video_id,
                       f"{len(xs)} flow_x / {len(ys)} flow_y files for {num_frames} RGB frames")]
    data = []
    for files in (xs, ys):
        data.append([])
        for f in files:
            with open(f, "rb") as fh:
                raw = fh.read()
            img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE) if raw else None
            if img is None:
                return None, [("flow_unreadable", video_id, f)]
            if img.shape != (height, width):
                return None, [("flow_size_mismatch", video_id,
                               f"{f}: {img.shape[1]}x{img.shape[0]}, RGB {width}x{height}")]
            data[-1].append(raw)
    return (data[0], data[1]), []


def make_record(job: VideoJob) -> tuple[dict | None, dict, list[Problem]]:
    """-> (record or None if the video is unusable, facts for the log, problems)."""
    vid = job.video_id
    try:
        video = read_video(job.video_path)
    except FileNotFoundError as e:
        return None, {}, [("video_missing", vid, str(e))]
    except VideoReadError as e:
        return None, {}, [("video_unreadable", vid, str(e))]
    n, h, w = video.frames.shape[:3]
    if n < 2:
        return None, {}, [("too_few_frames", vid, f"{job.video_path}: {n} frame(s)")]
    problems: list[Problem] = []
    flow = None
    if job.flow_dir is not None:
        flow, flow_problems = load_released_flow(job.flow_dir, n, h, w, vid)
        problems += flow_problems
    track, box_problems = boxes_from_annotations(job.box_frames or [], n, h, w, vid,
                                                 job.max_boxes)
    problems += box_problems
    example = records.make_example(
        video_id=vid, label=job.label, template=job.template, frames=video.frames, boxes=track,
        frame_jpegs=video.jpeg, flow_jpegs=flow, flow_method=job.flow_method)
    facts = {"flow": "released" if flow is not None else f"computed:{job.flow_method}",
             "frames": n, "fps": video.fps}
    return example, facts, problems
