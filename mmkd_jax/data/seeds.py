"""Stateless seeds: every random choice is a pure function of (seed, shard, epoch, position).

tf.data's own `shuffle(seed=...)` depends on TF's global seed and ignores a seed tensor inside
`flat_map`, so the pipeline derives all randomness here with stateless TF random ops instead.
"""
import tensorflow as tf

# Independent streams split from one example seed; the order is part of the reproducibility
# contract (changing it changes every augmentation).
EXAMPLE_STREAMS = ("frames", "scale", "offset", "color", "omni")


def base_seed(seed: int) -> tf.Tensor:
    """The user's integer seed as a stateless seed pair (int32[2])."""
    seed = int(seed)
    return tf.constant([seed % 2**31, (seed // 2**31) % 2**31], tf.int32)


def fold(seed: tf.Tensor, *data) -> tf.Tensor:
    """Folds integers (Python or tensors) into a stateless seed, in order."""
    for value in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int32))
    return seed


def example_streams(seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """Splits one example seed into the named independent streams."""
    seeds = tf.random.experimental.stateless_split(seed, len(EXAMPLE_STREAMS))
    return {name: seeds[i] for i, name in enumerate(EXAMPLE_STREAMS)}
