"""Where the records come from: the TFDS builder, split sizes and the raw serialized shards.

The pipeline reads the builder's tfrecord files itself (from TFDS file instructions) instead of
`builder.as_dataset`, so that shuffling and resume-skipping happen on serialized bytes, before
any parsing or decoding.
"""
import functools
import importlib.util

import tensorflow as tf
import tensorflow_datasets as tfds


@functools.cache
def load_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The prepared builder for `name` (e.g. "something_synthetic/standard").

    The project's datasets go through `data_prep.builders.load` (builds the synthetic dataset on
    first use, explains how to build a missing real one); any other TFDS dataset written in the
    record schema (e.g. test fixtures) is read as a prepared `tfds.builder`.
    """
    if importlib.util.find_spec("data_prep.builders") is not None:
        from data_prep import builders
        if name.partition("/")[0] in builders.BUILDER_MODULES:
            return builders.load(name, data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"dataset {name} is not prepared in {builder.data_dir}; build it with "
            f"`tfds build {name.split('/')[0]} --data_dir=<dir>`")
    return builder


def label_names(builder: tfds.core.DatasetBuilder) -> list[str]:
    return list(builder.info.metadata["label_names"])


def file_instructions(builder: tfds.core.DatasetBuilder,
                      split) -> list[tfds.core.utils.shard_utils.FileInstruction]:
    """The (file, skip, take) reads that make up `split` (a name, slice or even_splits part)."""
    file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    if file_format not in ("tfrecord", "None"):
        raise ValueError(f"{builder.name} is stored as {file_format}; the pipeline reads tfrecord")
    return [fi for fi in builder.info.splits[split].file_instructions if fi.take > 0]


def even_parts(builder: tfds.core.DatasetBuilder, split: str, n: int) -> list[list]:
    """`split` cut into `n` contiguous parts (sizes differ by at most 1), as file instructions."""
    return [file_instructions(builder, part) for part in tfds.even_splits(split, n)]


def count(instructions: list) -> int:
    return sum(fi.take for fi in instructions)


def read_serialized(instructions: list, order: tf.Tensor | None = None,
                    cycle_length: int = 1) -> tf.data.Dataset:
    """Serialized records of `instructions` (optionally files in `order`), interleaved.

    Deterministic for a given order: files are interleaved round-robin, one record at a time.
    """
    if not instructions:
        return tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))
    table = (tf.constant([fi.filename for fi in instructions]),
             tf.constant([fi.skip for fi in instructions], tf.int64),
             tf.constant([fi.take for fi in instructions], tf.int64))
    if order is not None:
        table = tuple(tf.gather(column, order) for column in table)
    files = tf.data.Dataset.from_tensor_slices(table)
    read = lambda f, skip, take: tf.data.TFRecordDataset(f).skip(skip).take(take)
    cycle = max(1, min(cycle_length, len(instructions)))
    if cycle == 1:
        return files.flat_map(read)
    return files.interleave(read, cycle_length=cycle, block_length=1, num_parallel_calls=cycle,
                            deterministic=True)


def read_indices(instructions: list, order: tf.Tensor | None = None,
                 cycle_length: int = 1) -> tf.data.Dataset:
    """int64 positions of the records `read_serialized(instructions, order, cycle_length)`
    yields, in that same order; position i is the i-th record of `instructions` read in their
    own order (`read_serialized(instructions)`), i.e. row i of a decoded store (data/cache.py).
    """
    if not instructions:
        return tf.data.Dataset.from_tensor_slices(tf.constant([], tf.int64))
    takes = [fi.take for fi in instructions]
    starts = [sum(takes[:i]) for i in range(len(takes))]
    table = (tf.constant(starts, tf.int64), tf.constant(takes, tf.int64))
    if order is not None:
        table = tuple(tf.gather(column, order) for column in table)
    files = tf.data.Dataset.from_tensor_slices(table)
    read = lambda start, take: tf.data.Dataset.range(start, start + take)
    cycle = max(1, min(cycle_length, len(instructions)))
    if cycle == 1:
        return files.flat_map(read)
    return files.interleave(read, cycle_length=cycle, block_length=1, num_parallel_calls=cycle,
                            deterministic=True)
