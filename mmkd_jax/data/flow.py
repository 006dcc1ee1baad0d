"""Dense optical flow in the TSN / denseflow 8-bit encoding (docs/datasets.md), OpenCV only (no TF).

`compute_flow(frames)` returns N-1 flow frames for N RGB frames: flow frame `i` is the motion from
frame `i` to `i+1`, each component stored as `round(255 * (clip(v, -20, 20) + 20) / 40)`. The
dataset builders and the inference-cost benchmark both call it, so it must stay TF-free.
"""
from collections.abc import Callable

import cv2
import numpy as np

# TSN clips displacements to +-20 px before quantising to 8 bits.
FLOW_BOUND = 20.0

# DIS and Farneback estimate flow on a pyramid; below this short side the presets' coarse finest
# scale (1/2 or 1/4 resolution) leaves too few pixels, so small frames are solved at full res.
_SMALL_FRAME = 128


def encode_tsn(v: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Float displacements (px) -> uint8, `round(255 * (clip(v, -b, b) + b) / (2b))`."""
    v = np.clip(np.asarray(v, np.float32), -bound, bound)
    # np.round is round-half-to-even, like the cvRound in denseflow's CAST macro.
    return np.round(255.0 * (v + bound) / (2.0 * bound)).astype(np.uint8)


def decode_tsn(q: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """uint8 -> float32 displacements (px); inverse of `encode_tsn` up to `bound / 255`."""
    return np.asarray(q, np.float32) * (2.0 * bound / 255.0) - bound


def _dis(shape: tuple[int, int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    if min(shape) < _SMALL_FRAME:
        dis.setFinestScale(0)
        dis.setPatchSize(6)
        dis.setPatchStride(2)
    return lambda a, b: dis.calc(a, b, None)


def _farneback(shape: tuple[int, int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    # Window ~1/16 of the short side (15 px at 240p, the OpenCV sample's value), at least 5 px.
    win = max(5, min(15, min(shape) // 16 | 1))
    levels = 3 if min(shape) >= _SMALL_FRAME else 2
    return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, levels, win, 3, 5, 1.1, 0)


def _tvl1(shape: tuple[int, int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    # OpenCV defaults are the ones TSN's denseflow used for the released SSv2 flow.
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return lambda a, b: tvl1.calc(a, b, None)


# method name -> factory(frame (h, w)) -> fn(prev_gray, next_gray) -> (h, w, 2) float32 flow.
FLOW_METHODS: dict[str, Callable[[tuple[int, int]], Callable]] = {
    "dis": _dis,
    "farneback": _farneback,
    "tvl1": _tvl1,
}


def compute_flow_float(frames: np.ndarray, method: str = "dis") -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N-1, H, W, 2) float32 displacements in pixels."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if frames.shape[0] < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {frames.shape[0]}")
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; choose from {sorted(FLOW_METHODS)}")
    flow_fn = FLOW_METHODS[method](frames.shape[1:3])
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([flow_fn(a, b) for a, b in zip(gray[:-1], gray[1:])]).astype(np.float32)


def compute_flow(frames: np.ndarray, method: str = "dis") -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 RGB -> (flow_x, flow_y), each (N-1, H, W) uint8 in the TSN encoding."""
    flow = compute_flow_float(frames, method)
    return encode_tsn(flow[..., 0]), encode_tsn(flow[..., 1])
