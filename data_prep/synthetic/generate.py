"""One `something_synthetic` record per (seed, split, index): render, then the real-data path.

Each clip has its own generator seeded by `(seed, split, index)`, so a clip is the same whatever
the number of worker processes or the order of generation. Its boxes go through
`data_prep.boxes` and its flow through the project's flow function (via `data_prep.records`),
exactly like a real video's.
"""
import dataclasses

import numpy as np

from data_prep import boxes as boxes_lib
from data_prep import records
from data_prep.synthetic import actions as act
from data_prep.synthetic.knobs import Knobs
from data_prep.synthetic.render import render_clip
from mmkd_jax.data.flow import compute_flow, decode_tsn

SPLIT_CODES = {"train": 0, "validation": 1}
# Flow faster than this (px/frame) counts as motion in the build statistics (noise is ~0.2).
MOVING_PX = 0.75


@dataclasses.dataclass(frozen=True)
class ClipJob:
    kind: str  # "standard" or "compositional"
    split: str  # "train" or "validation"
    index: int  # index inside the split (decides class and object set)
    video_index: int  # index over all splits (makes the video id unique)
    seed: int
    frame_size: int
    num_frames: int
    flow_method: str
    knobs: Knobs


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def clip_label(job: ClipJob) -> tuple[int, str]:
    """(class id, object set) of a clip: classes cycle, object sets follow the split kind."""
    label = job.index % act.NUM_CLASSES
    return label, act.object_set_for(job.kind, job.split, label, job.index)


def make_record(job: ClipJob) -> tuple[dict, dict, list]:
    """-> (record dict for TFDS, clip statistics, build-report problems)."""
    label, object_set = clip_label(job)
    video_id = f"syn_{job.video_index:06d}"
    clip = render_clip(clip_rng(job.seed, job.split, job.index), label, object_set, job.knobs,
                       job.frame_size, job.num_frames, video_id)
    track, problems = boxes_lib.boxes_from_annotations(
        clip.annotations, job.num_frames, job.frame_size, job.frame_size, video_id)
    flow_x, flow_y = compute_flow(clip.frames, job.flow_method)
    example = records.make_example(
        video_id=video_id, label=label, template=act.LABEL_NAMES[label], frames=clip.frames,
        boxes=track, flow_jpegs=records.encode_flow_jpegs(flow_x, flow_y))
    speed = np.hypot(decode_tsn(flow_x), decode_tsn(flow_y))
    moving = speed > MOVING_PX
    stats = dict(clip.info, label=label, num_boxes=float(track.num_boxes.mean()),
                 annotated=float((track.num_boxes > 0).mean()),
                 flow_moving=float(moving.mean()),
                 flow_speed=float(speed[moving].mean()) if moving.any() else 0.0)
    return example, stats, problems
