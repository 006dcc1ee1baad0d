"""mmkd_jax.data.flow: TSN encoding and the flow methods on a known translation."""
import sys

import cv2
import numpy as np
import pytest

from mmkd_jax.data import flow


def test_encode_tsn_exact_values():
    v = np.array([-25.0, -20.0, -10.0, 0.0, 0.08, 10.0, 20.0, 31.0], np.float32)
    # round(255 * (clip(v, -20, 20) + 20) / 40): 127.5 rounds half to even -> 128 for 0.0.
    np.testing.assert_array_equal(flow.encode_tsn(v), [0, 0, 64, 128, 128, 191, 255, 255])
    assert flow.encode_tsn(v).dtype == np.uint8


def test_tsn_round_trip_error_is_at_most_half_a_step():
    v = np.linspace(-20, 20, 10001, dtype=np.float32)
    err = np.abs(flow.decode_tsn(flow.encode_tsn(v)) - v)
    assert err.max() <= 20.0 / 255 + 1e-5  # half of one 40/255 quantisation step
    np.testing.assert_array_equal(flow.encode_tsn(flow.decode_tsn(np.arange(256))),
                                  np.arange(256))


def _translated_pair(h: int, w: int, dx: int, dy: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (h // 4 + 4, w // 4 + 4, 3)).astype(np.float32)
    big = np.clip(cv2.resize(base, (w + 40, h + 40), interpolation=cv2.INTER_CUBIC), 0, 255)
    big = big.astype(np.uint8)
    a = big[20:20 + h, 20:20 + w]
    b = big[20 - dy:20 - dy + h, 20 - dx:20 - dx + w]  # content moves by (+dx, +dy)
    return np.stack([a, b])


@pytest.mark.parametrize("method", sorted(flow.FLOW_METHODS))
@pytest.mark.parametrize("size", [(48, 48), (120, 160)])
def test_known_translation(method, size):
    frames = _translated_pair(*size, dx=3, dy=-2)
    fx, fy = flow.compute_flow(frames, method)
    assert fx.shape == fy.shape == (1, *size) and fx.dtype == np.uint8
    inner = (slice(None), slice(8, -8), slice(8, -8))
    vx, vy = flow.decode_tsn(fx[inner]), flow.decode_tsn(fy[inner])
    # Median within one TSN step (0.157 px) of the true shift, mean error under 0.3 px.
    assert abs(np.median(vx) - 3) < 0.16 and abs(np.median(vy) + 2) < 0.16
    assert np.abs(vx - 3).mean() < 0.3 and np.abs(vy + 2).mean() < 0.3


@pytest.mark.parametrize("method", sorted(flow.FLOW_METHODS))
def test_static_video_gives_zero_flow_and_n_minus_1_frames(method):
    frames = np.repeat(_translated_pair(48, 64, 0, 0)[:1], 5, axis=0)
    fx, fy = flow.compute_flow(frames, method)
    assert fx.shape == (4, 48, 64)
    # Away from the border (Farneback leaves sub-pixel junk in the last column) |v| < one step.
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert set(np.unique(fx[inner])) | set(np.unique(fy[inner])) <= {127, 128}


def test_large_motion_saturates_at_the_tsn_bound():
    big = flow.compute_flow_float(_translated_pair(64, 64, 2, 0), "dis")
    assert flow.encode_tsn(big * 20).max() == 255 and flow.encode_tsn(-big * 20).min() == 0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="at least 2 frames"):
        flow.compute_flow(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        flow.compute_flow(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="unknown flow method"):
        flow.compute_flow(np.zeros((2, 8, 8, 3), np.uint8), "raft")


def test_importable_without_tensorflow():
    import subprocess

    code = ("import sys, mmkd_jax.data.flow, mmkd_jax.data.video_io; "
            "assert 'tensorflow' not in sys.modules, 'TF imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_repo_root())


def _repo_root() -> str:
    import os

    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
