"""The spatial view: one square crop window per example, applied to every image modality.

Windows are sampled in the record's frame pixels (`frame_size`) and passed around normalised
(top, left, height, width as fractions of the frame), so that RGB, flow at any resolution and
the normalised boxes all see the same region. Frames are decoded whole and then cropped, as the
reference pipeline (PIL) does: `tf.image.decode_and_crop_jpeg` would be cheaper but its last
column differs from the whole decode by up to 35 levels where the window's edge splits a chroma
pair (measured on the synthetic frames), and a decoded-once cache (data/cache.py) must give the
very same pixels as decoding on the fly.
"""
import tensorflow as tf

# libjpeg's accurate integer IDCT, as PIL/torchvision decode; TF's default fast IDCT shifts
# colours by about -1 level (measured -1.2 in R, -1.3 in B on a test gradient).
DCT_METHOD = "INTEGER_ACCURATE"


def train_window(frame_hw: tf.Tensor, size: int, scale_range: tuple[float, float],
                 scale_seed: tf.Tensor, offset_seed: tf.Tensor) -> tf.Tensor:
    """Scale-jittered random crop as a normalised window, float32[4].

    Same region as resizing the short side to `int(size * U(scale_range))` and cropping a random
    `size x size` square: in the original frame that is a square of side
    `round(short * size / resized_short)` at a uniform random integer offset.
    """
    h, w = tf.cast(frame_hw[0], tf.float64), tf.cast(frame_hw[1], tf.float64)
    short = tf.minimum(h, w)
    factor = tf.random.stateless_uniform([], scale_seed, scale_range[0], scale_range[1],
                                         dtype=tf.float64)
    resized_short = tf.floor(size * factor)
    side = tf.clip_by_value(tf.round(short * size / resized_short), 1.0, short)
    u = tf.random.stateless_uniform([2], offset_seed, dtype=tf.float64)
    top, left = tf.floor(u[0] * (h - side + 1)), tf.floor(u[1] * (w - side + 1))
    return tf.cast(tf.stack([top / h, left / w, side / h, side / w]), tf.float32)


def eval_window(frame_hw: tf.Tensor) -> tf.Tensor:
    """Centre square of side `min(H, W)`: short side resized to S, centre S x S crop."""
    h, w = tf.cast(frame_hw[0], tf.float64), tf.cast(frame_hw[1], tf.float64)
    side = tf.minimum(h, w)
    top, left = tf.floor((h - side) / 2), tf.floor((w - side) / 2)
    return tf.cast(tf.stack([top / h, left / w, side / h, side / w]), tf.float32)


def pixel_window(window: tf.Tensor, image_hw: tf.Tensor) -> tf.Tensor:
    """Normalised window -> int32 [top, left, height, width] inside an image of `image_hw`."""
    hw = tf.cast(image_hw, tf.float32)
    extent = tf.clip_by_value(tf.round(window[2:] * hw), 1.0, hw)
    start = tf.clip_by_value(tf.round(window[:2] * hw), 0.0, hw - extent)
    return tf.cast(tf.concat([start, extent], 0), tf.int32)


def decode(jpegs: tf.Tensor, channels: int) -> tf.Tensor:
    """JPEGs string[T] (static T, one size) -> uint8[T,H,W,C]; decoded pixels pass through."""
    if jpegs.dtype != tf.string:
        return jpegs
    # Unrolled over the (small, static) T so the decodes can run as independent ops.
    return tf.stack([tf.io.decode_jpeg(jpegs[t], channels=channels, dct_method=DCT_METHOD)
                     for t in range(jpegs.shape[0])])


def decode_crop(frames: tf.Tensor, window: tf.Tensor, channels: int) -> tf.Tensor:
    """The window of every frame -> uint8[T,h,w,C]; `frames` are JPEGs (string[T]) or already
    decoded uint8[T,H,W,C] (a cached record)."""
    pixels = decode(frames, channels)
    top, left, height, width = tf.unstack(pixel_window(window, tf.shape(pixels)[1:3]))
    return pixels[:, top:top + height, left:left + width]


def resize(pixels: tf.Tensor, size: int) -> tf.Tensor:
    """uint8[T,h,w,C] -> float32[T,S,S,C] in [0, 255], bilinear (half-pixel centres)."""
    # Casting first is faster than resizing uint8 input (measured 1.6 vs 2.9 ms per 8x224 clip);
    # resizing all channels in one call shares the per-pixel interpolation weights.
    return tf.image.resize(tf.cast(pixels, tf.float32), [size, size], method="bilinear")


def decode_crop_resize(frames: tf.Tensor, window: tf.Tensor, size: int,
                       channels: int) -> tf.Tensor:
    """`decode_crop` then `resize`: float32[T,S,S,C] pixels of the window."""
    return resize(decode_crop(frames, window, channels), size)
