"""Assemble one record (data_prep/schema.py) from decoded frames, flow and boxes (no TF).

Real videos and the synthetic renderer both end here, so every modality of every dataset is made
by the same code: RGB frames JPEG-encoded (or kept as given when they already are JPEG), flow from
`mmkd_jax.data.flow.compute_flow` unless released flow is supplied, boxes from `data_prep.boxes`.
"""
import cv2
import numpy as np

from data_prep.boxes import BoxTrack
from mmkd_jax.data import flow as flow_lib

RGB_JPEG_QUALITY = 90
# Flow is stored as 8-bit images; a higher quality keeps JPEG error well below one TSN step.
FLOW_JPEG_QUALITY = 95


def encode_jpeg(image: np.ndarray, quality: int = RGB_JPEG_QUALITY) -> bytes:
    """(H, W, 3) RGB or (H, W) gray uint8 -> JPEG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def encode_flow_jpegs(flow_x: np.ndarray, flow_y: np.ndarray, quality: int = FLOW_JPEG_QUALITY
                      ) -> tuple[list[bytes], list[bytes]]:
    """TSN-encoded (N-1, H, W) uint8 flow -> (flow_x, flow_y) lists of grayscale JPEGs."""
    return [encode_jpeg(f, quality) for f in flow_x], [encode_jpeg(f, quality) for f in flow_y]


def compute_flow_jpegs(frames: np.ndarray, method: str) -> tuple[list[bytes], list[bytes]]:
    """RGB frames -> (flow_x, flow_y) JPEGs of the project's flow function (TSN encoding)."""
    return encode_flow_jpegs(*flow_lib.compute_flow(frames, method))


def make_example(*, video_id: str, label: int, template: str, frames: np.ndarray,
                 boxes: BoxTrack, frame_jpegs: list[bytes] | None = None,
                 flow_jpegs: tuple[list[bytes], list[bytes]] | None = None,
                 flow_method: str = "dis", jpeg_quality: int = RGB_JPEG_QUALITY) -> dict:
    """Everything for one video as the feature dict TFDS encodes (JPEG bytes are stored as is).

    `frame_jpegs`: the frames' original JPEG bytes, stored instead of re-encoding `frames`.
    `flow_jpegs`: released (flow_x, flow_y) JPEGs, already checked to be N-1 frames of the RGB
    size; computed from `frames` with `flow_method` when None.
    """
    n, h, w = frames.shape[:3]
    if n < 2:
        raise ValueError(f"{video_id}: need at least 2 frames, got {n}")
    if boxes.boxes.shape[0] != n:
        raise ValueError(f"{video_id}: {boxes.boxes.shape[0]} box frames for {n} RGB frames")
    if frame_jpegs is None:
        frame_jpegs = [encode_jpeg(f, jpeg_quality) for f in frames]
    if len(frame_jpegs) != n:
        raise ValueError(f"{video_id}: {len(frame_jpegs)} JPEG frames for {n} decoded frames")
    if flow_jpegs is None:
        flow_jpegs = compute_flow_jpegs(frames, flow_method)
    if not len(flow_jpegs[0]) == len(flow_jpegs[1]) == n - 1:
        raise ValueError(f"{video_id}: flow must have {n - 1} frames, got "
                         f"{len(flow_jpegs[0])}/{len(flow_jpegs[1])}")
    return {
        "video_id": video_id,
        "label": int(label),
        "template": template,
        "frames": list(frame_jpegs),
        "flow_x": list(flow_jpegs[0]),
        "flow_y": list(flow_jpegs[1]),
        "boxes": boxes.boxes.astype(np.float32),
        "box_categories": boxes.categories.astype(np.int32),
        "num_boxes": boxes.num_boxes.astype(np.int32),
        "frame_size": np.array([h, w], np.int32),
    }
