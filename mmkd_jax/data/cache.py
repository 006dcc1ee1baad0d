"""Decoded records held in memory, for splits that fit: every record is decoded once per run.

`decoded_store` reads a split part in its natural order, decodes its JPEG sequences whole (with
the very decoder the views use, spatial.DCT_METHOD) and stacks each field over the examples. The
views then take row i of every field (`views.example_fn(..., store=...)`) and crop, resize and
jitter exactly as they do from the JPEGs, so batches are identical with and without the store
(tests/test_cache.py). A split whose records differ in shape (real videos of different lengths
or sizes) cannot be stacked and is read from the records as usual; so is one larger than the
budget (`data.cache_decoded_gb`).
"""
import collections

import numpy as np
import tensorflow as tf
from absl import logging

from mmkd_jax.data import records, spatial

# JPEG sequence fields of the record schema -> channels.
JPEG_FIELDS = {"frames": 3, "flow_x": 1, "flow_y": 1}
_STORES: collections.OrderedDict = collections.OrderedDict()
_MAX_STORES = 4  # train + eval parts of two datasets (e.g. a student and its teacher's data)


def _decoder(tf_example_spec: dict, fields: tuple[str, ...]):
    parse_spec = {name: tf_example_spec[name] for name in fields}

    def decode(serialized):
        rec = tf.io.parse_single_example(serialized, parse_spec)
        for name, channels in JPEG_FIELDS.items():
            if name in rec:
                rec[name] = _decode_sequence(rec[name], channels)
        return rec

    return decode


def _decode_sequence(jpegs: tf.Tensor, channels: int) -> tf.Tensor:
    """string[L] -> uint8[L,H,W,C]; an empty sequence (a 1-frame video's flow) -> [0,0,0,C]."""
    def decode():
        return tf.map_fn(lambda j: tf.io.decode_jpeg(j, channels=channels,
                                                     dct_method=spatial.DCT_METHOD),
                         jpegs, fn_output_signature=tf.TensorSpec([None, None, channels],
                                                                  tf.uint8))

    return tf.cond(tf.size(jpegs) > 0, decode,
                   lambda: tf.zeros([0, 0, 0, channels], tf.uint8))


def _key(instructions: list, fields: tuple[str, ...]) -> tuple:
    return tuple((fi.filename, fi.skip, fi.take) for fi in instructions), fields


def decoded_store(tf_example_spec: dict, instructions: list, fields: tuple[str, ...],
                  max_gb: float, name: str = "") -> dict[str, tf.Tensor] | None:
    """{field: tensor stacked over the part's records}, or None when the part does not fit in
    `max_gb` or its records differ in shape. Kept for the process's next calls (eval reads the
    same part every epoch)."""
    if max_gb <= 0 or not instructions:
        return None
    fields = tuple(sorted(fields))
    key = _key(instructions, fields)
    if key in _STORES:
        _STORES.move_to_end(key)
        return _STORES[key]
    count = records.count(instructions)
    decode = _decoder(tf_example_spec, fields)
    ds = records.read_serialized(instructions).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    it = ds.as_numpy_iterator()
    first = next(it)
    estimate = count * sum(np.asarray(v).nbytes for v in first.values()) / 2**30
    if estimate > max_gb:
        logging.info("Input cache: %s needs ~%.1f GB decoded (> data.cache_decoded_gb=%g): "
                     "decoding on the fly.", name, estimate, max_gb)
        return None
    columns = {k: [np.asarray(v)] for k, v in first.items()}
    for example in it:
        for k, v in example.items():
            v = np.asarray(v)
            if v.shape != columns[k][0].shape:
                logging.info("Input cache: %s has records of different shapes (%s %s vs %s): "
                             "decoding on the fly.", name, k, v.shape, columns[k][0].shape)
                return None
            columns[k].append(v)
    store = {k: tf.convert_to_tensor(np.stack(v)) for k, v in columns.items()}
    logging.info("Input cache: %s decoded once, %d records, %.2f GB in memory.", name, count,
                 sum(int(np.prod(t.shape)) * t.dtype.size for t in store.values()) / 2**30)
    _STORES[key] = store
    while len(_STORES) > _MAX_STORES:
        _STORES.popitem(last=False)
    return store
