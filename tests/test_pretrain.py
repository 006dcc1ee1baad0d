"""Pretraining for the synthetic world: scenes, their targets, the ViT export and its inflation.

The end-to-end test runs `configs/pretrain.py:tiny` as a user would and checks that the file it
writes initialises the synthetic TimeSformer through the ImageNet path (`init_from` kind
`vit_npz`): a static clip through the inflated model gives the image model's features.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from data_prep.synthetic import actions as act
from data_prep.synthetic import scenes as scene_gen
from mmkd_jax import convert, models, recipes
from mmkd_jax.convert import vit as vit_convert
from mmkd_jax.convert.naming import flatten
from mmkd_jax.data import scenes
from mmkd_jax.models.vit import ViT
from mmkd_jax.train import checkpoint, pretrain
from tests.test_trainer_e2e import run_main

TINY = dict(hidden_size=32, depth=2, num_heads=2, mlp_dim=64, patch_size=8, image_size=32)


def test_scenes_are_seeded_and_labelled():
    a = scene_gen.render_scene(scene_gen.scene_rng(3, 17))
    b = scene_gen.render_scene(scene_gen.scene_rng(3, 17))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (48, 48, 3) and a.image.dtype == np.uint8
    many = [scene_gen.render_scene(scene_gen.scene_rng(0, i)) for i in range(200)]
    assert {s.shape for s in many} == set(range(len(act.SHAPES)))
    assert {s.colour for s in many} == set(range(len(scene_gen.COLOURS)))
    hands = [s for s in many if s.has_hand]
    assert 100 < len(hands) < 200  # P_HAND = 0.75
    for s in many:
        x1, y1, x2, y2 = s.object_box
        assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
        if not s.has_hand:
            np.testing.assert_array_equal(s.hand_box, 0.0)


def test_scene_seed_stream_differs_from_clips():
    """Scene generators never share a random stream with the benchmark's clips."""
    from data_prep.synthetic.generate import clip_rng

    scene = scene_gen.scene_rng(0, 5).integers(0, 2**31, 8)
    for split in ("train", "validation"):
        assert not np.array_equal(scene, clip_rng(0, split, 5).integers(0, 2**31, 8))


def _record(box, hand_box, has_hand):
    image = tf.io.encode_jpeg(tf.zeros([48, 48, 3], tf.uint8)).numpy()
    feats = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "object_box": tf.train.Feature(float_list=tf.train.FloatList(value=box)),
        "hand_box": tf.train.Feature(float_list=tf.train.FloatList(value=hand_box)),
        **{k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) for k, v in
           (("shape", 2), ("colour", 5), ("texture", 1), ("size", 3), ("has_hand", has_hand),
            ("has_second", 1))}}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


SPEC = {"image": tf.io.FixedLenFeature([], tf.string),
        "object_box": tf.io.FixedLenFeature([4], tf.float32),
        "hand_box": tf.io.FixedLenFeature([4], tf.float32),
        **{k: tf.io.FixedLenFeature([], tf.int64) for k in
           ("shape", "colour", "texture", "size", "has_hand", "has_second")}}


def test_targets_follow_the_crop():
    """Eval view = the whole frame: bins of the box centres in frame coordinates."""
    fn = scenes.example_fn(32, (1.15, 1.43), train=False)(SPEC)
    out = fn(tf.constant(_record([0.10, 0.60, 0.20, 0.80], [0.5, 0.0, 0.7, 0.2], 1)),
             tf.zeros([2], tf.int32))
    # object centre (0.15, 0.70) -> bins (1, 5); hand centre (0.6, 0.1) -> (4, 0) + 1.
    np.testing.assert_array_equal(out["targets"].numpy(), [2, 5, 1, 3, 1, 5, 5, 1, 1])
    assert out["image"].shape == (32, 32, 3)
    no_hand = fn(tf.constant(_record([0.1, 0.6, 0.2, 0.8], [0, 0, 0, 0], 0)),
                 tf.zeros([2], tf.int32))
    assert list(no_hand["targets"].numpy()[6:8]) == [0, 0]
    # A training crop moves the bins with the window, never outside [0, bins).
    train_fn = scenes.example_fn(32, (1.15, 1.43), train=True)(SPEC)
    for i in range(20):
        t = train_fn(tf.constant(_record([0.4, 0.4, 0.6, 0.6], [0.0, 0.0, 0.1, 0.1], 1)),
                     tf.constant([i, 7], tf.int32))["targets"].numpy()
        assert 2 <= t[4] <= 5 and 2 <= t[5] <= 5  # a centred object stays central
        assert 1 <= t[6] <= 2  # the corner hand stays in the first bins


def test_target_losses_and_counts():
    logits = jnp.zeros((3, scenes.NUM_OUTPUTS))
    targets = jnp.zeros((3, len(scenes.TARGETS)), jnp.int32)
    loss, parts = pretrain.target_losses(logits, targets)
    expected = sum(np.log(n) for _, n in scenes.TARGETS)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert set(parts) == {name for name, _ in scenes.TARGETS}
    logits = logits.at[:, 0].set(1.0).at[1, 0].set(jnp.nan)  # shape class 0 wins, NaN is wrong
    counts = pretrain.target_correct(logits, targets, jnp.array([1.0, 1.0, 0.0]))
    assert float(counts["shape"]) == 1.0 and float(counts["count"]) == 2.0


def test_npz_export_inflates_into_timesformer():
    """ViT -> big_vision npz -> TimeSformer via init_from: a static clip gives the ViT's
    features, and the report names only the head (another class count)."""
    vit = ViT(num_classes=7, **TINY)
    image = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    params = vit.init(jax.random.key(0), image, train=False)["params"]
    export = vit_convert.vit_to_npz(params, TINY["num_heads"])
    assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in export
    back, unused = vit_convert.vit_from_npz(export)
    assert unused == []
    flat = flatten(params)
    assert set(back) == set(flat)
    for key, value in flat.items():
        np.testing.assert_array_equal(back[key], value)


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pretrain_tiny")
    run_main(workdir, "--config=configs/pretrain.py:tiny")
    return workdir


def test_pretrain_tiny_end_to_end(tiny_pretrain, tmp_path):
    results = json.load(open(tiny_pretrain / "results.json"))
    assert results["steps"] == 20
    assert set(results["final"]["accuracy"]) == {n for n, _ in scenes.TARGETS}
    assert results["final"]["num_examples"] == 64
    # The export is the last checkpoint's params in the npz layout.
    ckpt = checkpoint.Checkpointer(str(tiny_pretrain / "checkpoints"), read_only=True)
    trained = jax.tree.map(np.asarray, ckpt.restore_params(20))
    source, unused = vit_convert.load_vit("vit_npz", str(tiny_pretrain / "vit.npz"), 8)
    assert unused == []

    # The synthetic preset's TimeSformer, initialised through the ImageNet path.
    cfg = recipes.base_config("tiny", "rgb")
    cfg.model.num_classes = 14
    module = models.build_model(cfg.model)
    video = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    static = jnp.repeat(video[:, None], cfg.data.num_frames, axis=1)
    fresh = module.init(jax.random.key(3), static, train=False)["params"]
    inflated, report = convert.init_from("vit_npz", str(tiny_pretrain / "vit.npz"), module,
                                         fresh)
    assert report.missing == [
        f"head/bias (checkpoint ({scenes.NUM_OUTPUTS},) != model (14,); kept from init)",
        f"head/kernel (checkpoint (32, {scenes.NUM_OUTPUTS}) != model (32, 14); kept from "
        "init)"]
    assert sorted(report.unused) == ["head/bias", "head/kernel"]
    vit = models.build_model({"name": "vit", "variant": "tiny", **TINY,
                              "num_classes": scenes.NUM_OUTPUTS})
    want = vit.apply({"params": trained}, video, train=False, return_features=True)
    got = module.apply({"params": inflated}, static, train=False, return_features=True)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)

    # Running the command again resumes the finished run: no training, the same export.
    before = np.load(tiny_pretrain / "vit.npz")["embedding/kernel"]
    out = run_main(tiny_pretrain, "--config=configs/pretrain.py:tiny")
    assert "Resuming pretraining from step 20" in out.stderr
    np.testing.assert_array_equal(np.load(tiny_pretrain / "vit.npz")["embedding/kernel"],
                                  before)
    assert os.path.exists(tiny_pretrain / "config.json")
