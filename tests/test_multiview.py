"""Multi-view evaluation: clips x crops views, 1 x 1 = the default eval, logits averaged per video.

Uses the toy records of tests/fixtures_records.py (frame sizes 4:3, portrait, square, one-frame
videos; the validation split has 7 videos, so eval batches are padded).
"""
import fixtures_records as fr
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from mmkd_jax.data import pipeline, records, sampling, spatial, views
from mmkd_jax.train import evaluate, sharding, steps

KEYS = ("rgb", "flow", "boxes", "categories")


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("records"))
    cfg = pipeline.default_data_config()
    cfg.name, cfg.data_dir = fr.build(data_dir, "toy"), data_dir
    cfg.num_frames, cfg.image_size = 4, 16
    return cfg


def expected_indices(length: int, num_frames: int, num_clips: int) -> np.ndarray:
    """Hand-written rule of docs/workflow.md: lo + (2c + 1)(hi - lo) // 2K per segment."""
    seg = (length - 1) / num_frames
    edges = np.array([int(np.round(seg * i)) for i in range(num_frames + 1)])
    lo, hi = edges[:-1], edges[1:]
    return np.stack([lo + (2 * c + 1) * (hi - lo) // (2 * num_clips) for c in range(num_clips)])


def expected_windows(h: int, w: int, num_crops: int) -> np.ndarray:
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    if num_crops == 1:
        starts = [(top, left)]
    elif w >= h:
        starts = [(top, 0), (top, left), (top, w - side)]
    else:
        starts = [(0, left), (top, left), (h - side, left)]
    return np.array([[t / h, x / w, side / h, side / w] for t, x in starts], np.float32)


def parsed_records(data_cfg, split="validation") -> list[dict]:
    builder = records.load_builder(data_cfg.name, data_cfg.data_dir)
    spec = builder.info.features.tf_example_spec
    ds = records.read_serialized(records.file_instructions(builder, split))
    return [tf.io.parse_single_example(r, spec) for r in ds]


def test_indices_and_windows_follow_the_documented_rule():
    # K = 1 is exactly the paper's segment midpoint.
    for length in (1, 2, 5, 13, 48):
        got = views.clip_indices(tf.constant(length), 8, 1).numpy()
        want = sampling.eval_indices(tf.constant(length), 8).numpy()
        np.testing.assert_array_equal(got[0], want)
    # 13 frames, 4 segments [0,3] [3,6] [6,9] [9,12]: offsets 0 and 2 (K=2), 0, 1, 2 (K=3).
    np.testing.assert_array_equal(views.clip_indices(tf.constant(13), 4, 2).numpy(),
                                  [[0, 3, 6, 9], [2, 5, 8, 11]])
    np.testing.assert_array_equal(views.clip_indices(tf.constant(13), 4, 3).numpy(),
                                  [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
    for h, w in ((240, 320), (80, 60), (64, 64), (48, 64), (101, 50)):
        hw = tf.constant([h, w])
        three = views.crop_windows(hw, 3).numpy()
        np.testing.assert_allclose(three, expected_windows(h, w, 3), atol=1e-7)
        # The middle crop is bit-identical to the default eval's centre crop.
        np.testing.assert_array_equal(three[1], spatial.eval_window(hw).numpy())
        np.testing.assert_array_equal(views.crop_windows(hw, 1).numpy()[0], three[1])
    np.testing.assert_allclose(views.crop_windows(tf.constant([240, 320]), 3).numpy()[:, 1],
                               [0.0, 0.125, 0.25])  # left / centre / right of a 4:3 frame
    with pytest.raises(ValueError, match="num_crops"):
        views.crop_windows(tf.constant([10, 10]), 2)


def test_one_by_one_view_equals_default_eval(data_cfg):
    builder = records.load_builder(data_cfg.name, data_cfg.data_dir)
    spec_tf = builder.info.features.tf_example_spec
    spec = views.ViewSpec.from_config(data_cfg)
    single = views.example_fn(spec_tf, spec, KEYS, train=False, with_id=True)
    multi = views.multiview_example_fn(spec_tf, spec, KEYS, 1, 1, with_id=True)
    no_seed = tf.zeros([2], tf.int32)
    serialized = list(records.read_serialized(records.file_instructions(builder, "validation")))
    assert len(serialized) == 7
    for rec in serialized:
        a, b = single(rec, no_seed), multi(rec, no_seed)
        assert sorted(a) == sorted(b)
        for key in KEYS:
            assert b[key].shape[0] == 1
            np.testing.assert_array_equal(b[key][0].numpy(), a[key].numpy())  # exactly
        assert a["video_id"].numpy() == b["video_id"].numpy()
    # Through the whole eval path: the default step and the view-averaging step agree exactly.
    mesh = sharding.make_mesh()
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(3, 3)), jnp.float32)
    fn = lambda w, b: jnp.mean(b["rgb"], axis=(1, 2, 3)) @ w
    plain = evaluate.eval_loop(steps.make_eval_step(fn), weights, data_cfg, ("rgb",), 4, mesh)
    averaged = evaluate.eval_loop(steps.make_eval_step(evaluate.view_averaged(fn)), weights,
                                  data_cfg, ("rgb",), 4, mesh, (1, 1))
    assert plain == averaged and plain["num_examples"] == 7


def test_two_clips_three_crops_are_six_views(data_cfg):
    recs = parsed_records(data_cfg)
    spec = views.ViewSpec.from_config(data_cfg)
    batches = list(pipeline.eval_iterator(data_cfg, KEYS, 4, num_clips=2, num_crops=3))
    assert [b["rgb"].shape for b in batches] == [(4, 6, 4, 16, 16, 3)] * 2
    assert batches[0]["boxes"].shape == (4, 6, 4, 8, 4)
    assert batches[1]["mask"].tolist() == [1, 1, 1, 0]  # 7 videos, one padding example
    assert not batches[1]["rgb"][3].any()
    got = {k: np.concatenate([b[k] for b in batches])[:7] for k in (*KEYS, "video_id")}
    for i, rec in enumerate(recs):
        assert got["video_id"][i] == rec["video_id"].numpy()
        length = int(tf.size(rec["frames"]))
        h, w = rec["frame_size"].numpy()
        idx, win = expected_indices(length, 4, 2), expected_windows(h, w, 3)
        for v in range(6):
            clip = views.Clip(rec, tf.constant(idx[v // 3], tf.int32), tf.constant(win[v % 3]),
                              None)
            np.testing.assert_array_equal(got["rgb"][i, v], views.rgb_view(clip, spec).numpy())
            np.testing.assert_array_equal(got["flow"][i, v],
                                          views.flow_view(clip, spec, 2).numpy())
            boxes, cats, _ = views.layout_view(clip, spec)
            np.testing.assert_array_equal(got["boxes"][i, v], boxes.numpy())
            np.testing.assert_array_equal(got["categories"][i, v], cats.numpy())
        if length > 1 and w != h:  # the views really differ (not six copies of one)
            assert not np.array_equal(got["rgb"][i, 0], got["rgb"][i, 2])
        if length >= 8:
            assert not np.array_equal(got["rgb"][i, 1], got["rgb"][i, 4])


def test_logits_are_averaged_over_the_views(data_cfg):
    mesh = sharding.make_mesh()
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3)) * 50, jnp.float32)
    fn = lambda w, b: jnp.mean(b["rgb"], axis=(1, 2, 3)) @ w  # depends on the view
    batches = list(pipeline.eval_iterator(data_cfg, ("rgb",), 4, num_clips=2, num_crops=3))
    # Directly: one batch of 6-view videos -> the mean of the per-view logits.
    rgb = batches[0]["rgb"]
    got = jax.jit(evaluate.view_averaged(fn))(weights, {"rgb": jnp.asarray(rgb)})
    per_view = np.stack([np.asarray(fn(weights, {"rgb": rgb[:, v]})) for v in range(6)], 1)
    np.testing.assert_allclose(got, per_view.mean(1), rtol=1e-5, atol=1e-5)
    assert np.abs(per_view - per_view.mean(1, keepdims=True)).max() > 1e-3  # views differ
    # Through eval_loop: top-k counts of the averaged logits, padding excluded.
    result = evaluate.eval_loop(steps.make_eval_step(evaluate.view_averaged(fn)), weights,
                                data_cfg, ("rgb",), 4, mesh, (2, 3))
    logits = np.concatenate([
        np.mean([np.asarray(fn(weights, {"rgb": b["rgb"][:, v]})) for v in range(6)], 0)
        for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches]) > 0
    rank = (logits > np.take_along_axis(logits, labels[:, None], 1)).sum(1)[mask]
    assert result["num_examples"] == 7
    assert result["top1"] == pytest.approx(100.0 * np.mean(rank < 1))
    assert result["top5"] == pytest.approx(100.0 * np.mean(rank < 5))


def test_protocol_is_described():
    assert evaluate.protocol((1, 1)) == evaluate.PROTOCOL
    assert evaluate.protocol((2, 3)).endswith("logits averaged over 6 views")
    assert evaluate.protocol_dict((2, 3))["num_views"] == 6
    with pytest.raises(ValueError, match="num_crops=2"):
        evaluate.views_of({"eval": {"num_clips": 1, "num_crops": 2}})
    assert evaluate.views_of({}) == (1, 1)  # configs written before config.eval existed
    # Members keep their own runs' results: a row says when those used other views.
    info = {"name": "rgb", "modality": "rgb",
            "results": {"final": {"top1": 1.0}, "eval": evaluate.protocol_dict((1, 1))}}
    assert evaluate.results_rows([info], views=(2, 3))[0][0] == "member rgb (rgb, 1x1 eval)"
    assert evaluate.results_rows([info], views=(1, 1))[0] == ("member rgb (rgb)", {"top1": 1.0})
