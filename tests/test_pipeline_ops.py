"""The input pipeline's building blocks against NumPy references (no records needed)."""
import colorsys

import numpy as np
import pytest
import tensorflow as tf

from mmkd_jax.data import boxes as boxes_lib
from mmkd_jax.data import color, layout, sampling, seeds, spatial


def ref_bounds(length: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    seg = (length - 1) / num_frames
    lo = np.array([int(np.round(seg * i)) for i in range(num_frames)])
    hi = np.array([int(np.round(seg * (i + 1))) for i in range(num_frames)])
    return lo, hi


@pytest.mark.parametrize("length,num_frames", [(1, 8), (2, 8), (3, 8), (8, 8), (9, 8), (45, 8),
                                               (97, 8), (30, 16)])
def test_sampling_follows_segment_formula(length, num_frames):
    lo, hi = ref_bounds(length, num_frames)
    got_lo, got_hi = (t.numpy() for t in sampling.segment_bounds(length, num_frames))
    np.testing.assert_array_equal(got_lo, lo)
    np.testing.assert_array_equal(got_hi, hi)
    np.testing.assert_array_equal(sampling.eval_indices(length, num_frames).numpy(),
                                  (lo + hi) // 2)
    draws = np.stack([sampling.train_indices(length, num_frames, [s, 7]).numpy()
                      for s in range(300)])
    assert ((draws >= lo) & (draws <= hi)).all()
    # Uniform over the inclusive range: both ends occur in every segment (P(miss) < 1e-9).
    np.testing.assert_array_equal(draws.min(0), lo)
    np.testing.assert_array_equal(draws.max(0), hi)


def test_sampling_short_videos_repeat_frames():
    # L = 3, T = 8: seg = 0.25, edges round-half-even 0,0,0,1,1,1,2,2,2.
    np.testing.assert_array_equal(sampling.eval_indices(3, 8).numpy(), [0, 0, 0, 1, 1, 1, 2, 2])
    for s in range(20):
        np.testing.assert_array_equal(sampling.train_indices(1, 8, [s, 0]).numpy(), np.zeros(8))


def test_train_window_is_scale_jittered_square_crop():
    h, w, size = 240, 320, 224
    wins = np.stack([spatial.train_window([h, w], size, (1.15, 1.43), [s, 1], [s, 2]).numpy()
                     for s in range(500)]).astype(np.float64)
    top, left, side_h, side_w = wins[:, 0] * h, wins[:, 1] * w, wins[:, 2] * h, wins[:, 3] * w
    for px in (top, left, side_h):
        np.testing.assert_allclose(px, np.round(px), atol=1e-3)  # whole pixels
    np.testing.assert_allclose(side_h, side_w, atol=1e-3)  # square in pixels
    # short side 240 -> int(224 * U(1.15, 1.43)) in [257, 320] -> window side 240*224/r.
    assert side_h.min() >= 168 - 1e-3 and side_h.max() <= 209 + 1e-3
    assert side_h.min() <= 172 and side_h.max() >= 205
    assert (top >= -1e-3).all() and (top + side_h <= h + 1e-3).all()
    assert (left >= -1e-3).all() and (left + side_w <= w + 1e-3).all()
    assert abs(np.mean(left / (w - side_w)) - 0.5) < 0.05  # uniform offsets
    assert abs(np.mean(top / (h - side_h)) - 0.5) < 0.05


@pytest.mark.parametrize("hw,expected", [((240, 320), (0, 40 / 320, 1, 0.75)),
                                         ((320, 240), (40 / 320, 0, 0.75, 1)),
                                         ((100, 100), (0, 0, 1, 1))])
def test_eval_window_is_centre_square(hw, expected):
    np.testing.assert_allclose(spatial.eval_window(hw).numpy(), expected, atol=1e-7)


def test_decode_crop_resize_matches_numpy_crop():
    h, w, size = 90, 120, 30
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([xx * 2, yy * 2, np.full_like(xx, 100)], -1).astype(np.uint8)
    jpeg = tf.io.encode_jpeg(img, quality=100, chroma_downsampling=False)
    window = tf.constant([15 / h, 30 / w, 60 / h, 60 / w])
    np.testing.assert_array_equal(spatial.pixel_window(window, [h, w]).numpy(), [15, 30, 60, 60])
    out = spatial.decode_crop_resize(tf.stack([jpeg, jpeg]), window, size, 3).numpy()
    assert out.shape == (2, size, size, 3)
    full = tf.io.decode_jpeg(jpeg, dct_method=spatial.DCT_METHOD)[15:75, 30:90]
    np.testing.assert_allclose(out[1], tf.image.resize(full, [size, size]).numpy(), atol=1e-4)
    centres = (np.arange(size) + 0.5) * 60 / size - 0.5  # bilinear sample positions
    # JPEG error only; a window off by one pixel would add 2 levels everywhere.
    np.testing.assert_allclose(out[0, 0, :, 0], 2 * (30 + centres), atol=1.5)
    np.testing.assert_allclose(out[0, :, 0, 1], 2 * (15 + centres), atol=1.5)


def ref_crop_boxes(boxes, cats, window):
    top, left, hh, ww = window
    out = (boxes - [left, top, left, top]) / [ww, hh, ww, hh]
    clipped = np.clip(out, 0, 1)
    keep = (cats > 0) & (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
    return np.where(keep[..., None], clipped, 0), np.where(keep, cats, 0)


def test_crop_boxes_matches_numpy():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.8, (4, 6, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.01, 0.3, xy.shape)], -1).astype(np.float32)
    boxes[0, 0] = [0.0, 0.0, 0.1, 0.1]  # leaves the crop entirely
    boxes[0, 1] = [0.1, 0.3, 0.5, 0.6]  # cut by the left edge
    cats = rng.integers(0, 3, (4, 6)).astype(np.int32)
    cats[0, :2] = 2
    window = np.array([0.2, 0.25, 0.6, 0.7], np.float32)
    got_boxes, got_cats, unclipped = boxes_lib.crop_boxes(boxes, cats, window)
    want_boxes, want_cats = ref_crop_boxes(boxes, cats, window)
    np.testing.assert_allclose(got_boxes.numpy(), want_boxes, atol=1e-6)
    np.testing.assert_array_equal(got_cats.numpy(), want_cats)
    assert got_cats.numpy()[0, 0] == 0 and got_cats.numpy()[0, 1] == 2
    np.testing.assert_allclose(got_boxes.numpy()[0, 1], [0, 0.1 / 0.6, 0.25 / 0.7, 0.4 / 0.6],
                               atol=1e-6)
    np.testing.assert_allclose(unclipped.numpy()[0, 1, 0], (0.1 - 0.25) / 0.7, atol=1e-6)


def test_fit_slots_pads_truncates_and_masks():
    boxes = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    cats = np.full((2, 4), 2, np.int32)
    b3, c3 = boxes_lib.fit_slots(boxes, cats, np.array([1, 4], np.int32), 3)
    np.testing.assert_array_equal(c3.numpy(), [[2, 0, 0], [2, 2, 2]])
    np.testing.assert_array_equal(b3.numpy(), boxes[:, :3])
    b6, c6 = boxes_lib.fit_slots(boxes, cats, np.array([4, 2], np.int32), 6)
    np.testing.assert_array_equal(c6.numpy(), [[2, 2, 2, 2, 0, 0], [2, 2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(b6.numpy()[:, 4:], 0)


def test_normalize_uses_imagenet_stats_and_first_channels():
    x = tf.fill([1, 2, 2, 3], 0.5)
    np.testing.assert_allclose(color.normalize(x).numpy()[0, 0, 0],
                               (0.5 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225],
                               rtol=1e-6)
    np.testing.assert_allclose(color.normalize(tf.fill([1, 2], 0.25)).numpy()[0],
                               [(0.25 - 0.485) / 0.229, (0.25 - 0.456) / 0.224], rtol=1e-6)


def test_flow_photometric_channels():
    xy = tf.constant([[[[51.0, 102.0, 7.0]]]])  # the third input channel is ignored
    two = color.flow_photometric(xy, 2).numpy().ravel()
    np.testing.assert_allclose(two, [(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224], rtol=1e-5)
    three = color.flow_photometric(xy, 3, jit=False).numpy().ravel()
    np.testing.assert_allclose(three, list(two) + [(0.3 - 0.406) / 0.225], rtol=1e-5)
    with pytest.raises(ValueError, match="2 or 3"):
        color.flow_photometric(xy, 1)


def ref_jitter(x, b, c, s, h):
    luma = np.array([0.299, 0.587, 0.114])
    x = np.clip(x * b, 0, 1)
    m = (x @ luma).mean(axis=(1, 2), keepdims=True)[..., None]
    x = np.clip((x - m) * c + m, 0, 1)
    g = (x @ luma)[..., None]
    x = np.clip((x - g) * s + g, 0, 1)
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in x.reshape(-1, 3)])
    hsv[:, 0] = (hsv[:, 0] + h) % 1.0
    return np.array([colorsys.hsv_to_rgb(*p) for p in hsv]).reshape(x.shape)


def test_color_jitter_matches_reference():
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 5, 4, 3)).astype(np.float32)  # [B,T,H,W,C]
    factors = np.array([[1.2, 0.8, 1.1, -0.07], [0.8, 1.2, 0.9, 0.09]], np.float32)
    got = color.color_jitter(tf.constant(x), tf.constant(factors)).numpy()
    for b in range(2):  # per-example factors
        np.testing.assert_allclose(got[b], ref_jitter(x[b].astype(np.float64), *factors[b]),
                                   atol=2e-4)
    identity = color.color_jitter(tf.constant(x), tf.constant([color.IDENTITY_JITTER] * 2))
    np.testing.assert_allclose(identity.numpy(), x, atol=1e-5)
    draws = np.stack([color.jitter_factors([s, 3]).numpy() for s in range(400)])
    assert (draws[:, :3] >= 0.75).all() and (draws[:, :3] <= 1.25).all()
    assert (np.abs(draws[:, 3]) <= 0.1).all()
    assert draws[:, :3].min() < 0.76 and draws[:, :3].max() > 1.24 and draws[:, 3].max() > 0.099


def test_adjust_hue_matches_tf_image_and_photometric_jit():
    x = tf.random.stateless_uniform([2, 3, 6, 6, 3], [4, 2])
    for delta in (-0.1, 0.03, 0.5):
        np.testing.assert_allclose(color.adjust_hue(x, delta).numpy(),
                                   tf.image.adjust_hue(x, delta).numpy(), atol=1e-5)
    pixels = tf.cast(x * 255, tf.uint8)
    factors = tf.constant([[1.2, 0.8, 1.1, -0.07], [0.8, 1.2, 0.9, 0.09]])
    eager = color.photometric(pixels, factors, jit=False).numpy()
    np.testing.assert_allclose(color.photometric(pixels, factors).numpy(), eager, atol=1e-4)
    want = color.normalize(color.color_jitter(tf.cast(pixels, tf.float32) / 255, factors))
    np.testing.assert_allclose(eager, want.numpy(), atol=1e-6)


def test_render_layout_draws_2px_outlines():
    size = 32
    boxes = np.array([[[0.25, 0.25, 0.75, 0.75],  # object: pixels [8, 24)
                       [0.5, 0.5, 1.0, 1.0],  # hand, drawn over the object
                       [-0.5, 0.0, 0.25, 0.5],  # object cut by the left border
                       [0.1, 0.1, 0.2, 0.2]]], np.float32)  # padding: not drawn
    cats = np.array([[2, 1, 2, 0]], np.int32)
    img = layout.render_layout(tf.constant(boxes), tf.constant(cats), size).numpy()[0]

    def outline(x1, y1, x2, y2):
        m = np.zeros((size, size), bool)
        m[max(y1, 0):y2, max(x1, 0):x2] = True
        inner = np.zeros_like(m)
        inner[max(y1 + 2, 0):max(y2 - 2, 0), max(x1 + 2, 0):max(x2 - 2, 0)] = True
        return m & ~inner

    hand = outline(16, 16, 32, 32)
    obj = (outline(8, 8, 24, 24) | outline(-16, 0, 8, 16)) & ~hand
    np.testing.assert_array_equal(img[hand], np.tile([0, 0, 255], (hand.sum(), 1)))
    np.testing.assert_array_equal(img[obj], np.tile([255, 0, 0], (obj.sum(), 1)))
    np.testing.assert_array_equal(img[~(hand | obj)], 255)
    assert obj[8, 8:24].all() and obj[9, 8:16].all() and not obj[10, 10]  # 2-px, hollow
    assert not obj[5, 0] and obj[0, 0]  # left edge outside the canvas, top edge visible


def test_example_seeds_are_distinct_per_position_and_epoch():
    root = seeds.fold(seeds.base_seed(3), 0)
    pairs = {tuple(seeds.fold(root, e, p).numpy()) for e in range(3) for p in range(50)}
    assert len(pairs) == 150
    streams = seeds.example_streams(seeds.fold(root, 0, 0))
    assert len({tuple(v.numpy()) for v in streams.values()}) == len(seeds.EXAMPLE_STREAMS)
    assert not np.array_equal(seeds.base_seed(3).numpy(), seeds.base_seed(2**31 + 3).numpy())
