"""Pretraining examples from `something_synthetic_images` records: image view + target classes.

The image goes through the video pipeline's spatial and photometric steps (one frame): in
training a scale-jittered random crop (`spatial.train_window`), in evaluation the centre square;
then ImageNet normalisation. The targets are read off the record and the crop: the object's
shape, colour, texture and size class, where the object and the hand sit in the crop (column
and row bins of their box centres), and whether a second object is in the picture.
"""
from collections.abc import Callable

import tensorflow as tf

from mmkd_jax.data import color, seeds, spatial

POSITION_BINS = 8
# (name, number of classes), in the order of the `targets` vector. `hand_x` / `hand_y` class 0
# means "no hand"; bins of a hand's centre are 1..POSITION_BINS.
TARGETS: tuple[tuple[str, int], ...] = (
    ("shape", 5), ("colour", 8), ("texture", 4), ("size", 4),
    ("object_x", POSITION_BINS), ("object_y", POSITION_BINS),
    ("hand_x", POSITION_BINS + 1), ("hand_y", POSITION_BINS + 1),
    ("second_object", 2),
)
NUM_OUTPUTS = sum(n for _, n in TARGETS)
_FIELDS = ("image", "shape", "colour", "texture", "size", "object_box", "hand_box", "has_hand",
           "has_second")


def _bins(box: tf.Tensor, window: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Column and row bins of a normalised x1,y1,x2,y2 box's centre inside the crop window."""
    cx = ((box[0] + box[2]) / 2 - window[1]) / window[3]
    cy = ((box[1] + box[3]) / 2 - window[0]) / window[2]
    to_bin = lambda u: tf.cast(tf.clip_by_value(tf.floor(u * POSITION_BINS), 0,
                                                POSITION_BINS - 1), tf.int32)
    return to_bin(cx), to_bin(cy)


def example_fn(image_size: int, scale_range: tuple[float, float], train: bool,
               color_jitter: bool = False) -> Callable[[dict], Callable]:
    """A `pipeline.ExampleFn`: record -> {"image": float32[S,S,3], "targets": int32[A], "mask"}.

    Colour jitter is off by default: it would move colours across the `colour` classes.
    """

    def make(tf_example_spec: dict):
        spec = {k: tf_example_spec[k] for k in _FIELDS}

        def fn(serialized: tf.Tensor, seed: tf.Tensor) -> dict:
            rec = tf.io.parse_single_example(serialized, spec)
            jpeg = rec["image"][None]
            hw = tf.image.extract_jpeg_shape(rec["image"])[:2]
            jitter = None
            if train:
                streams = seeds.example_streams(seed)
                window = spatial.train_window(hw, image_size, scale_range, streams["scale"],
                                              streams["offset"])
                if color_jitter:
                    jitter = color.jitter_factors(streams["color"])
            else:
                window = spatial.eval_window(hw)
            pixels = spatial.decode_crop_resize(jpeg, window, image_size, 3)
            image = color.photometric(pixels, jitter, True)[0]
            ox, oy = _bins(rec["object_box"], window)
            hx, hy = _bins(rec["hand_box"], window)
            has_hand = tf.cast(rec["has_hand"], tf.int32)
            targets = tf.stack([tf.cast(rec[k], tf.int32) for k in
                                ("shape", "colour", "texture", "size")]
                               + [ox, oy, has_hand * (hx + 1), has_hand * (hy + 1),
                                  tf.cast(rec["has_second"], tf.int32)])
            return {"image": image, "targets": targets, "mask": tf.constant(1.0)}

        return fn

    return make


def padding_example(image_size: int) -> dict:
    """Mask-0 example shaped like `example_fn`'s output (eval batches are padded with it)."""
    return {"image": tf.zeros([image_size, image_size, 3]),
            "targets": tf.zeros([len(TARGETS)], tf.int32), "mask": tf.constant(0.0)}
