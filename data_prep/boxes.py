"""Something-Else box annotations -> fixed-size per-frame arrays (docs/architecture.md §1).

Input is the per-video list of the released `bounding_box_smthsmth_part*.json` files (the synthetic
renderer emits the same format, so both go through this one function). Frames are matched by the
1-based number in `name`; frames without an entry get `num_boxes == 0` (never shifted). Boxes are
pixel x1y1x2y2, normalised by the frame width/height and clipped to [0, 1]; every fix made to an
input box is returned as a problem for the build report.
"""
import dataclasses
import math
import os
import re

import numpy as np

from data_prep.schema import CATEGORY_HAND, CATEGORY_OBJECT, MAX_BOXES

Problem = tuple[str, str, str]  # (reason, video_id, detail), see data_prep.report.REASONS

_FRAME_NUMBER = re.compile(r"(\d+)\.\w+$")


@dataclasses.dataclass(frozen=True)
class BoxTrack:
    boxes: np.ndarray  # (N, K, 4) float32, normalised x1y1x2y2
    categories: np.ndarray  # (N, K) int32, 0 pad / 1 hand / 2 object
    num_boxes: np.ndarray  # (N,) int32


def empty_track(num_frames: int, max_boxes: int = MAX_BOXES) -> BoxTrack:
    return BoxTrack(boxes=np.zeros((num_frames, max_boxes, 4), np.float32),
                    categories=np.zeros((num_frames, max_boxes), np.int32),
                    num_boxes=np.zeros((num_frames,), np.int32))


def frame_number(name: str) -> int | None:
    """`"12345/0007.jpg"` -> 7 (1-based, as released); None when the name has no number."""
    m = _FRAME_NUMBER.search(os.path.basename(str(name)))
    return int(m.group(1)) if m else None


def category_id(label: dict) -> int:
    hand = label.get("category") == "hand" or label.get("standard_category") == "hand"
    return CATEGORY_HAND if hand else CATEGORY_OBJECT


def _pixel_box(label: dict) -> tuple[float, float, float, float] | None:
    try:
        b = label["box2d"]
        box = tuple(float(b[k]) for k in ("x1", "y1", "x2", "y2"))
    except (KeyError, TypeError, ValueError):
        return None
    return box if all(math.isfinite(v) for v in box) else None


def normalise_box(box: tuple[float, float, float, float], height: int, width: int,
                  video_id: str, where: str) -> tuple[np.ndarray | None, list[Problem]]:
    """Pixel x1y1x2y2 -> normalised, ordered, clipped box (None if no area is left)."""
    x1, y1, x2, y2 = box
    problems = []
    if x1 > x2 or y1 > y2:
        problems.append(("box_inverted", video_id, f"{where}: {box}"))
        x1, x2 = min(x1, x2), max(x1, x2)
        y1, y2 = min(y1, y2), max(y1, y2)
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        problems.append(("box_out_of_frame", video_id, f"{where}: {box} in {width}x{height}"))
    nb = np.clip(np.array([x1 / width, y1 / height, x2 / width, y2 / height], np.float32), 0, 1)
    if nb[2] <= nb[0] or nb[3] <= nb[1]:
        problems.append(("box_empty", video_id, f"{where}: {box} in {width}x{height}"))
        return None, problems
    return nb, problems


def boxes_from_annotations(frames: list[dict], num_frames: int, height: int, width: int,
                           video_id: str, max_boxes: int = MAX_BOXES
                           ) -> tuple[BoxTrack, list[Problem]]:
    """One video's Something-Else frame list -> (BoxTrack, problems)."""
    track = empty_track(num_frames, max_boxes)
    problems: list[Problem] = []
    seen: set[int] = set()
    for frame in frames:
        name = frame.get("name", "") if isinstance(frame, dict) else ""
        number = frame_number(name)
        if number is None or not 1 <= number <= num_frames:
            problems.append(("box_frame_out_of_range", video_id,
                             f"frame {name!r} of a {num_frames}-frame video"))
            continue
        t = number - 1
        if t in seen:
            problems.append(("box_frame_duplicate", video_id, f"frame {name!r}"))
            continue
        seen.add(t)
        labels = frame.get("labels") or []
        k = 0
        for i, label in enumerate(labels):
            where = f"frame {number} box {i}"
            box = _pixel_box(label) if isinstance(label, dict) else None
            if box is None:
                problems.append(("box_malformed", video_id, f"{where}: {label!r}"[:200]))
                continue
            nb, box_problems = normalise_box(box, height, width, video_id, where)
            problems += box_problems
            if nb is None:
                continue
            if k == max_boxes:
                problems.append(("too_many_boxes", video_id, f"{where}: more than {max_boxes}"))
                continue
            track.boxes[t, k] = nb
            track.categories[t, k] = category_id(label)
            k += 1
        track.num_boxes[t] = k
    return track, problems
