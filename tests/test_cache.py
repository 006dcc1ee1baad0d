"""The decoded-once input cache gives exactly the batches of decoding every epoch."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from mmkd_jax.data import cache, pipeline, records

KEYS = ("rgb", "flow", "boxes", "categories", "omni")


def _cfg(gb: float):
    cfg = pipeline.default_data_config()
    cfg.name = "something_synthetic/standard_tiny"
    cfg.num_frames, cfg.image_size = 8, 32
    cfg.cache_decoded_gb = gb
    return cfg


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("start_step", [0, 9])
def test_cached_train_batches_equal_uncached(start_step):
    """Over more than one epoch (tiny: 7 steps of 8), from scratch and after a resume."""
    get = lambda gb: list(itertools.islice(pipeline.train_iterator(
        _cfg(gb), KEYS, 8, seed=3, start_step=start_step), 10))
    cache._STORES.clear()
    cached = get(2.0)
    assert [fields for _, fields in cache._STORES] == [
        ("box_categories", "boxes", "flow_x", "flow_y", "frame_size", "frames", "label",
         "num_boxes")]
    _assert_same(cached, get(0.0))


@pytest.mark.parametrize("views", [(1, 1), (2, 3)])
def test_cached_eval_batches_equal_uncached(views):
    get = lambda gb: list(pipeline.eval_iterator(_cfg(gb), KEYS, 8, num_clips=views[0],
                                                 num_crops=views[1]))
    _assert_same(get(2.0), get(0.0))


def test_store_rows_follow_the_record_order():
    cfg = _cfg(2.0)
    builder = records.load_builder(cfg.name, None)
    part = records.file_instructions(builder, "validation")
    spec = builder.info.features.tf_example_spec
    store = cache.decoded_store(spec, part, ("frames", "video_id"), 2.0)
    assert store["frames"].shape[1:] == (16, 48, 48, 3)
    ids = [tf.io.parse_single_example(r, {"video_id": spec["video_id"]})["video_id"].numpy()
           for r in records.read_serialized(part)]
    assert [bytes(v) for v in store["video_id"].numpy()] == ids
    assert list(records.read_indices(part).as_numpy_iterator()) == list(range(len(ids)))
    # Too large for the budget: read from the records instead.
    assert cache.decoded_store(spec, part[:1], ("frames",), 1e-6) is None
