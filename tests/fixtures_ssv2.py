"""SSv2-format fixtures from real footage (Debian opencv-doc's tree.avi / vtest.avi).

`make_manual_dir(root)` lays out a Something-Something V2 manual dir as released - VP9 webm
videos at 12 fps re-encoded with PyAV, label JSONs, test answers, Something-Else box JSON, a
released flow folder and a Something-Else compositional split - with one instance of each kind of
bad input. `EXPECTED` says what a correct build must make of it.
"""
import json
import os
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"


def footage(name: str) -> str:
    """Path of an opencv-doc video, or skip the test with the reason."""
    path = os.path.join(OPENCV_DATA, name)
    if not os.path.isfile(path):
        pytest.skip(f"real footage {path} missing: install it with `apt-get install opencv-doc`")
    return path


def read_frames(path: str, start: int, count: int, size: tuple[int, int] | None = None
                ) -> np.ndarray:
    """Frames [start, start + count) of a video as (count, H, W, 3) uint8, resized to (W, H)."""
    frames = []
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                img = frame.to_ndarray(format="rgb24")
                frames.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA) if size else img)
            if len(frames) == count:
                break
    assert len(frames) == count, f"{path} has fewer than {start + count} frames"
    return np.stack(frames)


def write_webm(path: str, frames: np.ndarray, fps: int = 12) -> None:
    """VP9 webm like the SSv2 release (12 fps), encoded with PyAV (no ffmpeg binary)."""
    with av.open(path, "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _box(x1, y1, x2, y2, category="mug", ident="object 0") -> dict:
    return {"box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "category": category,
            "standard_category": "hand" if category == "hand" else "0001",
            "gt_annotation": ident}


LABELS = {"Pushing something from left to right": "0", "Moving something up": "1",
          "Holding something": "2", "Putting something on a surface": "3"}
SE_LABELS = {"Moving something up": 0, "Pushing something from left to right": 1}
W, H = 320, 240

# What a correct build of make_manual_dir() holds (frame counts are decoded webm frames).
EXPECTED = {
    "ssv2_splits": {"train": {"101": (0, 24), "102": (1, 20), "108": (2, 12)},
                    "validation": {"103": (1, 16)},
                    "test": {"107": (1, 16)}},
    "se_splits": {"train": {"101": (1, 24), "102": (0, 20)}, "validation": {"103": (0, 16)}},
    # reason -> count in the SSv2 build report
    "ssv2_problems": {"video_missing": 1, "video_unreadable": 1, "unknown_template": 1,
                      "flow_frame_count_mismatch": 1, "boxes_unknown_video": 1,
                      "boxes_missing": 4, "box_inverted": 1, "box_out_of_frame": 1,
                      "box_malformed": 1, "box_frame_out_of_range": 1},
    # video 101, frame index -> [(category, normalised box)]
    "boxes_101": {
        0: [(1, (32 / W, 48 / H, 96 / W, 120 / H)), (2, (300 / W, 200 / H, 1.0, 1.0))],
        1: [(2, (100 / W, 50 / H, 200 / W, 150 / H))],
        2: [(1, (0.0, 0.0, 64 / W, 60 / H))],
        3: [],  # no annotation for frame 4: empty, later frames not shifted
        4: [(2, (160 / W, 120 / H, 240 / W, 180 / H))],
    },
}


def make_manual_dir(root: str) -> str:
    """Writes the SSv2 + Something-Else manual dir fixture under `root`; returns its path."""
    tree, vtest = footage("tree.avi"), footage("vtest.avi")
    manual = os.path.join(root, "manual")
    videos = os.path.join(manual, "20bn-something-something-v2")
    os.makedirs(videos)
    write_webm(os.path.join(videos, "101.webm"), read_frames(tree, 0, 24))
    write_webm(os.path.join(videos, "102.webm"), read_frames(tree, 30, 20))
    write_webm(os.path.join(videos, "103.webm"), read_frames(vtest, 0, 16, (W, H)))
    write_webm(os.path.join(videos, "107.webm"), read_frames(tree, 10, 16))
    # 108 is a folder of JPEG frames: its bytes must be stored as given.
    os.makedirs(os.path.join(videos, "108"))
    for i, frame in enumerate(read_frames(tree, 40, 12), 1):
        cv2.imwrite(os.path.join(videos, "108", f"{i:04d}.jpg"),
                    cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    with open(os.path.join(videos, "105.webm"), "wb") as f:  # corrupt: webm magic, then junk
        f.write(b"\x1a\x45\xdf\xa3" + np.random.default_rng(0).bytes(3000))
    # 104 is listed in validation.json but has no file.

    write_json(os.path.join(manual, "labels", "labels.json"), LABELS)
    write_json(os.path.join(manual, "labels", "train.json"), [
        {"id": "101", "label": "pushing mug from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["mug"]},
        {"id": "102", "label": "moving pen up", "template": "Moving [something] up",
         "placeholders": ["pen"]},
        {"id": "105", "label": "holding a cup", "template": "Holding [something]",
         "placeholders": ["cup"]},
        {"id": "106", "label": "juggling balls", "template": "Juggling [something]",
         "placeholders": ["balls"]},
        {"id": "108", "label": "holding a leaf", "template": "Holding [something]",
         "placeholders": ["leaf"]},
    ])
    write_json(os.path.join(manual, "labels", "validation.json"), [
        {"id": "103", "template": "Moving [something] up"},
        {"id": "104", "template": "Holding [something]"},
    ])
    write_json(os.path.join(manual, "labels", "test.json"), [{"id": "107"}])
    with open(os.path.join(manual, "labels", "test-answers.csv"), "w") as f:
        f.write("107;Moving something up\n")

    # Released TSN flow: 102 complete (stored as given), 103 with too few frames (recomputed).
    for vid, count in (("102", 19), ("103", 10)):
        d = os.path.join(manual, "flow", vid)
        os.makedirs(d)
        for i in range(1, count + 1):
            for axis, value in (("x", 100 + i), ("y", 150 - i)):
                img = np.full((H, W), value, np.uint8)
                cv2.imwrite(os.path.join(d, f"flow_{axis}_{i:05d}.jpg"), img)

    name = lambda vid, n: f"{vid}/{n:04d}.jpg"
    write_json(os.path.join(manual, "bounding_box_smthsmth_part1.json"), {
        "101": [
            {"name": name(101, 1), "labels": [_box(32, 48, 96, 120, "hand", "object hand"),
                                               _box(300, 200, 340, 260)], "nr_instances": 2},
            {"name": name(101, 2), "labels": [_box(200, 150, 100, 50)], "nr_instances": 1},
            {"name": name(101, 3), "labels": [_box(0, 0, 64, 60, "hand", "object hand"),
                                               {"box2d": {"x1": 5}, "category": "mug"}],
             "nr_instances": 2},
            {"name": name(101, 5), "labels": [_box(160, 120, 240, 180)], "nr_instances": 1},
            {"name": name(101, 99), "labels": [_box(1, 1, 2, 2)], "nr_instances": 1},
        ],
    })
    write_json(os.path.join(manual, "bounding_box_smthsmth_part2.json"), {
        "103": [{"name": name(103, 1), "labels": [_box(10, 10, 50, 50)], "nr_instances": 1}],
        "999": [{"name": name(999, 1), "labels": [_box(10, 10, 50, 50)], "nr_instances": 1}],
    })

    write_json(os.path.join(manual, "compositional", "labels.json"), SE_LABELS)
    write_json(os.path.join(manual, "compositional", "train.json"), [
        {"id": "101", "template": "Pushing [something] from left to right"},
        {"id": "102", "template": "Moving [something] up"}])
    write_json(os.path.join(manual, "compositional", "validation.json"), [
        {"id": "103", "template": "Moving [something] up"}])
    return manual
