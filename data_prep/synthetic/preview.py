"""PNG grid of a few synthetic clips (RGB with boxes, then flow) for eyeballing the design.

    python -m data_prep.synthetic.preview --out /tmp/synthetic.png --kind compositional \
        --split validation --clips 14

Each row is one clip: sampled RGB frames with the record's boxes drawn (hand blue, objects red),
then the TSN flow of the same frames as a colour wheel image, then the class template.
"""
import argparse

import cv2
import numpy as np

from data_prep.synthetic import actions as act
from data_prep.synthetic.generate import ClipJob, make_record
from data_prep.synthetic.knobs import Knobs
from mmkd_jax.data.flow import decode_tsn

_BOX_COLOURS = {1: (40, 90, 255), 2: (255, 40, 40)}  # RGB: hand blue, object red


def _decode(jpegs: list[bytes], flags: int) -> np.ndarray:
    imgs = [cv2.imdecode(np.frombuffer(b, np.uint8), flags) for b in jpegs]
    return np.stack([cv2.cvtColor(i, cv2.COLOR_BGR2RGB) if i.ndim == 3 else i for i in imgs])


def flow_to_rgb(fx: np.ndarray, fy: np.ndarray, max_px: float = 3.0) -> np.ndarray:
    """TSN-encoded flow -> RGB colour wheel (hue = direction, value = speed up to max_px)."""
    vx, vy = decode_tsn(fx), decode_tsn(fy)
    mag, ang = cv2.cartToPolar(vx, vy, angleInDegrees=True)
    hsv = np.stack([ang / 2, np.full_like(mag, 255), np.clip(mag / max_px, 0, 1) * 255], -1)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def clip_row(example: dict, frame_ids: list[int], scale: int) -> np.ndarray:
    """One clip as an image strip: RGB+boxes for `frame_ids`, a gap, flow for the same ids."""
    rgb = _decode(example["frames"], cv2.IMREAD_COLOR)
    fx = _decode(example["flow_x"], cv2.IMREAD_GRAYSCALE)
    fy = _decode(example["flow_y"], cv2.IMREAD_GRAYSCALE)
    h, w = rgb.shape[1:3]
    tiles, flows = [], []
    for t in frame_ids:
        tile = cv2.resize(rgb[t], (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        for k in range(example["num_boxes"][t]):
            x1, y1, x2, y2 = example["boxes"][t, k] * [w, h, w, h] * scale
            cv2.rectangle(tile, (int(x1), int(y1)), (int(x2), int(y2)),
                          _BOX_COLOURS[int(example["box_categories"][t, k])], 1)
        tiles.append(tile)
        ft = min(t, len(fx) - 1)
        flows.append(cv2.resize(flow_to_rgb(fx[ft], fy[ft]), (w * scale, h * scale),
                                interpolation=cv2.INTER_NEAREST))
    gap = np.full((h * scale, 4, 3), 255, np.uint8)
    strip = np.concatenate(sum(([t, gap] for t in tiles + flows), []), axis=1)
    text = np.full((14, strip.shape[1], 3), 255, np.uint8)
    cv2.putText(text, f"{example['label']}: {example['template']}", (2, 11),
                cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([text, strip, np.full((4, strip.shape[1], 3), 255, np.uint8)], 0)


def preview_grid(path: str, kind: str = "standard", split: str = "train", num_clips: int = 6,
                 first: int = 0, knobs: Knobs | None = None, seed: int = 0, frame_size: int = 48,
                 num_frames: int = 16, flow_method: str = "farneback", num_shown: int = 4,
                 scale: int = 3) -> np.ndarray:
    """Renders clips `first .. first + num_clips - 1` of a split and writes a PNG grid."""
    knobs = knobs or Knobs()
    frame_ids = np.linspace(0, num_frames - 1, num_shown).round().astype(int).tolist()
    rows = []
    for i in range(first, first + num_clips):
        job = ClipJob(kind, split, i, i, seed, frame_size, num_frames, flow_method, knobs)
        example, stats, _ = make_record(job)
        rows.append(clip_row(example, frame_ids, scale))
        set_name = stats["object_set"]
        cv2.putText(rows[-1], f"set {set_name} group {act.GROUPS[example['label']]}",
                    (rows[-1].shape[1] - 120, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 160),
                    1, cv2.LINE_AA)
    grid = np.concatenate(rows, axis=0)
    cv2.imwrite(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--kind", default="standard", choices=act.SPLIT_KINDS)
    p.add_argument("--split", default="train", choices=("train", "validation"))
    p.add_argument("--clips", type=int, default=act.NUM_CLASSES)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame_size", type=int, default=48)
    p.add_argument("--num_frames", type=int, default=16)
    p.add_argument("--flow_method", default="farneback")
    a = p.parse_args()
    preview_grid(a.out, a.kind, a.split, a.clips, a.first, seed=a.seed, frame_size=a.frame_size,
                 num_frames=a.num_frames, flow_method=a.flow_method)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
