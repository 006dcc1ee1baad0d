"""Test-only TFDS builder writing tiny videos in the record schema (data_prep/schema.py).

Two configs:
- `toy`: a green square (the object, box slot 1) moving over a grey background whose level encodes
  the frame index (`30 + 10 t`), a magenta hand rectangle (slot 0) and a tiny object box in the
  top-right corner (slot 2) that a centre crop of a 4:3 frame cuts away. Flow frame j of video v
  is constant: x = `10 + 10 j` (the frame), y = `20 + 20 v` (the video). Frame counts and sizes
  vary (incl. L = 1 and 320x240).
- `vtest`: real footage for the input-pipeline benchmark: 64 overlapping 48-frame windows of
  OpenCV's `vtest.avi`, 320x240 JPEG frames (OpenCV read, resize, encode at quality 90), DIS
  optical flow in the TSN encoding, random boxes.

Usage: `build(tmp_dir, "toy")` returns the TFDS name to put in `data_cfg.name`.
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from data_prep import schema

VTEST_AVI = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"

# (num_frames, height, width) per video; validation has an odd count to exercise eval padding.
TOY_VIDEOS = {
    "train": [(12, 240, 320), (9, 96, 128), (1, 64, 64), (3, 80, 60), (16, 120, 160),
              (20, 100, 100), (7, 64, 96), (10, 90, 120), (5, 72, 72), (14, 60, 80)],
    "validation": [(8, 240, 320), (1, 48, 64), (6, 64, 64), (11, 96, 72), (4, 80, 80),
                   (13, 72, 96), (2, 64, 48)],
}
LABEL_NAMES = ["Pushing something from left to right", "Lifting something up",
               "Spinning something"]
HAND_RGB, OBJECT_RGB = (255, 0, 255), (0, 255, 0)
# vtest.avi has 795 frames: 64 overlapping 48-frame windows, 11 frames apart.
VTEST_VIDEOS, VTEST_FRAMES, VTEST_STRIDE = 64, 48, 11


def background_level(t: int) -> int:
    return 30 + 10 * t


def flow_values(video: int, j: int) -> tuple[int, int]:
    return 10 + 10 * j, 20 + 20 * video


def toy_boxes(t: int, height: int, width: int) -> np.ndarray:
    """Pixel boxes (3, 4) x1,y1,x2,y2 at frame t: hand, moving object, corner object."""
    side = round(0.4 * min(height, width))
    x = round(0.03 * width * t) % max(width - side, 1)
    y = round(0.1 * height) + round(0.02 * height) * (t % 3)
    hand = [round(0.1 * width), round(0.72 * height), round(0.3 * width), round(0.95 * height)]
    corner = [round(0.95 * width), 0, width, round(0.05 * height)]
    return np.array([hand, [x, y, x + side, y + side], corner], np.float32)


def _toy_example(split: str, i: int, length: int, height: int, width: int) -> dict:
    k = schema.MAX_BOXES
    frames, boxes = [], np.zeros((length, k, 4), np.float32)
    cats, nums = np.zeros((length, k), np.int32), np.full((length,), 3, np.int32)
    for t in range(length):
        img = np.full((height, width, 3), background_level(t), np.uint8)
        px = toy_boxes(t, height, width).astype(int)
        img[px[0, 1]:px[0, 3], px[0, 0]:px[0, 2]] = HAND_RGB
        img[px[1, 1]:px[1, 3], px[1, 0]:px[1, 2]] = OBJECT_RGB
        frames.append(img)
        boxes[t, :3] = px / np.array([width, height, width, height], np.float32)
        cats[t, :3] = [schema.CATEGORY_HAND, schema.CATEGORY_OBJECT, schema.CATEGORY_OBJECT]
    flow = [flow_values(i, j) for j in range(length - 1)]
    return {
        "video_id": f"{split}_{i:03d}",
        "label": i % len(LABEL_NAMES),
        "template": LABEL_NAMES[i % len(LABEL_NAMES)],
        "frames": frames,
        "flow_x": [np.full((height, width, 1), fx, np.uint8) for fx, _ in flow],
        "flow_y": [np.full((height, width, 1), fy, np.uint8) for _, fy in flow],
        "boxes": boxes,
        "box_categories": cats,
        "num_boxes": nums,
        "frame_size": np.array([height, width], np.int32),
    }


def _vtest_examples(num_videos: int, num_frames: int, stride: int):
    import cv2  # only the real-footage config needs OpenCV

    cap = cv2.VideoCapture(VTEST_AVI)
    rgb = []
    needed = (num_videos - 1) * stride + num_frames
    while len(rgb) < needed:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb.append(cv2.resize(bgr, (320, 240), interpolation=cv2.INTER_AREA))
    cap.release()
    if len(rgb) < needed:
        raise FileNotFoundError(f"{VTEST_AVI} is missing or too short (apt install opencv-doc)")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    rng = np.random.default_rng(0)
    jpeg = lambda img: cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in rgb]
    flows = [dis.calc(a, b, None) for a, b in zip(gray[:-1], gray[1:])]
    tsn_all = [np.round(255 * (np.clip(f, -20, 20) + 20) / 40).astype(np.uint8) for f in flows]
    for v in range(num_videos):
        clip = rgb[v * stride:v * stride + num_frames]
        tsn = tsn_all[v * stride:v * stride + num_frames - 1]
        k = schema.MAX_BOXES
        boxes = np.zeros((num_frames, k, 4), np.float32)
        x1y1 = rng.uniform(0, 0.6, (num_frames, 4, 2))
        boxes[:, :4] = np.concatenate([x1y1, x1y1 + rng.uniform(0.1, 0.4, x1y1.shape)], -1)
        cats = np.zeros((num_frames, k), np.int32)
        cats[:, :4] = [1, 1, 2, 2]
        yield f"vtest_{v:03d}", {
            "video_id": f"vtest_{v:03d}",
            "label": v % len(LABEL_NAMES),
            "template": LABEL_NAMES[v % len(LABEL_NAMES)],
            # OpenCV's JPEG bytes are stored as given, like frames extracted by ffmpeg.
            "frames": [jpeg(f) for f in clip],  # imencode takes BGR, writes standard JPEG
            "flow_x": [jpeg(f[..., 0]) for f in tsn],
            "flow_y": [jpeg(f[..., 1]) for f in tsn],
            "boxes": np.clip(boxes, 0, 1),
            "box_categories": cats,
            "num_boxes": np.full((num_frames,), 4, np.int32),
            "frame_size": np.array([240, 320], np.int32),
        }


class MmkdFixtureVideos(tfds.core.GeneratorBasedBuilder):
    """Tiny videos with known content for the input-pipeline tests and benchmark."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="toy"), tfds.core.BuilderConfig(name="vtest")]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, features=schema.features(),
            metadata=tfds.core.MetadataDict(label_names=LABEL_NAMES))

    def _split_generators(self, dl_manager):
        if self.builder_config.name == "vtest":
            return {"train": _vtest_examples(VTEST_VIDEOS, VTEST_FRAMES, VTEST_STRIDE)}
        return {split: self._generate_examples(split) for split in TOY_VIDEOS}

    def _generate_examples(self, split):
        for i, (length, height, width) in enumerate(TOY_VIDEOS[split]):
            yield f"{split}_{i:03d}", _toy_example(split, i, length, height, width)


def build(data_dir: str, config: str = "toy") -> str:
    """Writes the fixture records under `data_dir` (once) and returns the TFDS name."""
    if config == "vtest" and not os.path.exists(VTEST_AVI):
        raise FileNotFoundError(f"{VTEST_AVI} is missing (apt install opencv-doc)")
    name = f"{MmkdFixtureVideos.name}/{config}"
    tfds.disable_progress_bar()
    tfds.builder(name, data_dir=data_dir).download_and_prepare()
    return name
