"""Uniform-segment frame sampling (docs/pipeline.md), shared by every modality of an example."""
import tensorflow as tf


def segment_bounds(length: tf.Tensor, num_frames: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Inclusive [lo, hi] frame range of each of the `num_frames` segments (int32[T] each).

    `seg = (L - 1) / T`, segment i spans `[round(seg * i), round(seg * (i + 1))]`; float64 and
    round-half-to-even match `np.round` of the reference implementation. L < T repeats frames.
    """
    seg = tf.cast(length - 1, tf.float64) / num_frames
    edges = tf.cast(tf.round(seg * tf.range(num_frames + 1, dtype=tf.float64)), tf.int32)
    return edges[:-1], edges[1:]


def train_indices(length: tf.Tensor, num_frames: int, seed: tf.Tensor) -> tf.Tensor:
    """One uniform random frame per segment (int32[T])."""
    lo, hi = segment_bounds(length, num_frames)
    u = tf.random.stateless_uniform([num_frames], seed, dtype=tf.float64)  # in [0, 1)
    return lo + tf.cast(tf.floor(u * tf.cast(hi - lo + 1, tf.float64)), tf.int32)


def eval_indices(length: tf.Tensor, num_frames: int) -> tf.Tensor:
    """Segment midpoints `(lo + hi) // 2` (int32[T])."""
    lo, hi = segment_bounds(length, num_frames)
    return (lo + hi) // 2
