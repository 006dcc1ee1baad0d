"""Photometric side of the view: colour jitter (RGB only) and ImageNet normalisation.

Applied per example, right after the resize while the clip is still in cache (per batch it was
measured 25% slower); factors broadcast, so batches of clips with per-clip factors work too.
"""
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601 luma, as torchvision's rgb_to_grayscale (the paper's reference pipeline).
_LUMA = (0.299, 0.587, 0.114)
IDENTITY_JITTER = (1.0, 1.0, 1.0, 0.0)


def normalize(x01: tf.Tensor) -> tf.Tensor:
    """ImageNet normalisation of values in [0, 1]; C channels use the first C mean/std entries."""
    channels = x01.shape[-1]
    mean = tf.constant(IMAGENET_MEAN[:channels], tf.float32)
    std = tf.constant(IMAGENET_STD[:channels], tf.float32)
    return (x01 - mean) / std


def _gray(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(x * tf.constant(_LUMA, tf.float32), axis=-1, keepdims=True)


def jitter_factors(seed: tf.Tensor, strength: float = 0.25, hue: float = 0.1) -> tf.Tensor:
    """[brightness, contrast, saturation, hue]: U(1 +- strength) x3 and U(-hue, hue)."""
    u = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
    return u * tf.constant([strength, strength, strength, hue]) + tf.constant(IDENTITY_JITTER)


def adjust_hue(x01: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    """HSV hue rotation by `delta` turns in [-0.5, 0.5] (broadcast against x01[..., 0]).

    Same result as tf.image.adjust_hue, but `delta` may differ per example, and it is plain
    element-wise math that XLA fuses (wrap-around by compare-and-add: floormod is a slow libm
    call per element under XLA, 4x slower overall).
    """
    r, g, b = x01[..., 0], x01[..., 1], x01[..., 2]
    hi, lo = tf.maximum(tf.maximum(r, g), b), tf.minimum(tf.minimum(r, g), b)
    chroma = hi - lo
    inv = 1.0 / tf.where(chroma > 0, chroma, 1.0)
    hue = tf.where(hi == r, (g - b) * inv,
                   tf.where(hi == g, (b - r) * inv + 2.0, (r - g) * inv + 4.0))  # [-1, 5)
    hue = hue + 6.0 * delta
    hue = tf.where(hue < 0.0, hue + 6.0, tf.where(hue >= 6.0, hue - 6.0, hue))
    out = []
    for n in (5.0, 3.0, 1.0):  # HSV -> RGB: channel = V - C * clamp(min(k, 4 - k), 0, 1)
        k = n + hue
        k = tf.where(k >= 6.0, k - 6.0, k)
        out.append(hi - chroma * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0))
    return tf.stack(out, -1)


def color_jitter(x01: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """Colour jitter of clips float32[..., T, H, W, 3] in [0, 1] with factors [..., 4].

    One set of factors per clip. Fixed order brightness, contrast, saturation, hue; like
    torchvision's ColorJitter on float images each step is a blend clamped to [0, 1] and
    contrast blends towards each frame's mean grey level.
    """
    f = factors[..., None, None, None, :]  # broadcast over T, H, W
    b, c, s, h = f[..., 0:1], f[..., 1:2], f[..., 2:3], f[..., 3]
    x = tf.clip_by_value(x01 * b, 0.0, 1.0)
    mean = tf.reduce_mean(_gray(x), axis=(-3, -2, -1), keepdims=True)
    x = tf.clip_by_value((x - mean) * c + mean, 0.0, 1.0)
    gray = _gray(x)
    x = tf.clip_by_value((x - gray) * s + gray, 0.0, 1.0)
    return adjust_hue(x, h)


def _photometric(pixels: tf.Tensor, factors: tf.Tensor | None) -> tf.Tensor:
    x = tf.cast(pixels, tf.float32) / 255.0
    if factors is not None:
        x = color_jitter(x, factors)
    return normalize(x)


# XLA fuses the ~30 element-wise passes of jitter + normalisation into a few loops over the
# clip: several times less CPU than op-by-op TF kernels (docs/pipeline.md). Shapes are static,
# so each view shape compiles once.
_photometric_xla = tf.function(_photometric, jit_compile=True)


def photometric(pixels: tf.Tensor, factors: tf.Tensor | None, jit: bool = True) -> tf.Tensor:
    """[0, 255] pixels (any dtype) -> /255 -> optional colour jitter -> normalisation."""
    return (_photometric_xla if jit else _photometric)(pixels, factors)


def _flow_photometric(pixels: tf.Tensor, channels: int) -> tf.Tensor:
    xy = tf.cast(pixels[..., :2], tf.float32) / 255.0
    if channels == 3:
        xy = tf.concat([xy, 0.5 * (xy[..., :1] + xy[..., 1:])], -1)
    return normalize(xy)


_flow_photometric_xla = tf.function(_flow_photometric, jit_compile=True)


def flow_photometric(pixels: tf.Tensor, channels: int, jit: bool = True) -> tf.Tensor:
    """Flow pixels (x, y, ...) in [0, 255] -> normalised (x, y) or, channels = 3,
    (x, y, (x + y) / 2); extra input channels are ignored."""
    if channels not in (2, 3):
        raise ValueError(f"flow_channels must be 2 or 3, got {channels}")
    return (_flow_photometric_xla if jit else _flow_photometric)(pixels, channels)
