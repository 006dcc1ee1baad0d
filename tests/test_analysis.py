"""mode=predict: per-video predictions and pooled features from a checkpoint and nothing else.

A checkpoint of a tiny RGB TimeSformer is written directly (random weights, no training) for the
toy records of tests/fixtures_records.py (3 classes; 7 validation videos, so batches of 4 are
padded). Reference logits and features come from the model applied to the eval pipeline's own
batches.
"""
import json
import os
import shutil

import fixtures_records as fr
import jax
import numpy as np
import pytest

from mmkd_jax import analysis, checkpoint_meta, models, recipes
from mmkd_jax.data import pipeline
from mmkd_jax.train import checkpoint

STEP = 5


def toy_config(data_dir: str, name: str):
    cfg = recipes.base_config("tiny", "rgb")
    cfg.experiment = "toy_rgb"
    cfg.data.name, cfg.data.data_dir = name, data_dir
    cfg.data.num_frames = cfg.model.num_frames = 4
    cfg.model.num_classes = len(fr.LABEL_NAMES)
    cfg.eval.batch_size = 4
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config, workdir, module, params) of a run whose checkpoint is all we keep."""
    root = tmp_path_factory.mktemp("analysis")
    data_dir = str(root / "records")
    cfg = toy_config(data_dir, fr.build(data_dir, "toy"))
    module = models.build_model(cfg.model)
    # Random weights in the model's shapes (tracing only, no compile).
    shapes = jax.eval_shape(lambda: module.init(
        {"params": jax.random.key(0)}, np.zeros((1, 4, 32, 32, 3), np.float32),
        train=False)["params"])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.2 * rng.normal(size=s.shape)).astype(s.dtype), shapes)
    workdir = str(root / "run")
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    meta = checkpoint_meta.build(cfg, fr.LABEL_NAMES, cfg.experiment) | {"step": STEP}
    ckpt.save(STEP, params, {"count": np.int32(STEP)}, meta)
    ckpt.close()
    return cfg, workdir, module, params


def reference(cfg, module, params, split, num_clips=1):
    """(ids, labels, logits, features) straight from the eval pipeline and the model."""
    apply = jax.jit(lambda p, x, f: module.apply({"params": p}, x, train=False,
                                                 return_features=f), static_argnums=2)
    ids, labels, logits, feats = [], [], [], []
    for b in pipeline.eval_iterator(cfg.data, ("rgb",), 4, split=split, num_clips=num_clips):
        keep = b["mask"] > 0
        x = b["rgb"] if num_clips == 1 else b["rgb"].reshape((-1,) + b["rgb"].shape[2:])
        out = [np.asarray(apply(params, x, f)) for f in (False, True)]
        if num_clips > 1:
            out = [o.reshape(len(keep), num_clips, -1).mean(1) for o in out]
        ids += [v.decode() for v in b["video_id"][keep]]
        labels.append(b["label"][keep])
        logits.append(out[0][keep])
        feats.append(out[1][keep])
    return ids, np.concatenate(labels), np.concatenate(logits), np.concatenate(feats)


def read_outputs(workdir, tag):
    rows = [json.loads(line) for line in open(os.path.join(workdir, f"predictions_{tag}.jsonl"))]
    return rows, np.load(os.path.join(workdir, f"features_{tag}.npz"))


def test_predictions_and_features_of_the_eval_split(run):
    cfg, workdir, module, params = run
    summary = analysis.run(cfg, workdir)
    ids, labels, logits, feats = reference(cfg, module, params, "validation")
    rows, npz = read_outputs(workdir, "validation")
    assert len(ids) == len(rows) == summary["num_videos"] == 7  # padding excluded
    assert [r["video_id"] for r in rows] == ids == npz["video_ids"].tolist()  # split order
    assert [r["label"] for r in rows] == labels.tolist() == npz["labels"].tolist()
    assert [r["label_name"] for r in rows] == [fr.LABEL_NAMES[i] for i in labels]
    np.testing.assert_allclose([r["logits"] for r in rows], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(npz["logits"], logits, rtol=1e-5, atol=1e-6)
    assert npz["features"].shape == (7, 32)
    np.testing.assert_allclose(npz["features"], feats, rtol=1e-5, atol=1e-6)
    for r, row_logits in zip(rows, logits):
        probs = np.exp(row_logits - row_logits.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        assert [t["class_id"] for t in r["top"]] == order.tolist()  # top-5 capped at 3 classes
        assert [t["label"] for t in r["top"]] == [fr.LABEL_NAMES[i] for i in order]
        np.testing.assert_allclose([t["probability"] for t in r["top"]], probs[order],
                                   rtol=1e-6)
    info = json.loads(str(npz["info"]))
    assert (info["step"], info["split"], info["protocol"]) == (STEP, "validation",
                                                              "single view: 1 clip (segment "
                                                              "midpoints) x 1 centre crop")
    rank = (logits > np.take_along_axis(logits, labels[:, None], 1)).sum(1)
    assert summary["top1"] == pytest.approx(100 * np.mean(rank == 0))


def test_moved_checkpoint_other_split_and_views(run, tmp_path):
    cfg, workdir, module, params = run
    moved = tmp_path / "elsewhere" / str(STEP)
    shutil.copytree(os.path.join(workdir, "checkpoints", str(STEP)), moved)
    meta = checkpoint.Checkpointer(str(moved.parent), read_only=True).restore_meta(STEP)
    assert checkpoint_meta.missing_fields(meta) == []
    assert meta["preprocessing"]["num_frames"] == 4 and meta["label_names"] == fr.LABEL_NAMES
    # The command line's model is wrong on purpose: the checkpoint's meta decides the model.
    wrong = toy_config(cfg.data.data_dir, cfg.data.name)
    wrong.model.depth, wrong.data.num_frames = 1, 8
    wrong.eval.num_clips = 2
    wrong.analysis.split, wrong.analysis.checkpoint = "train[:5]", str(moved)
    out_dir = tmp_path / "out"  # no config.json, no checkpoints
    summary = analysis.run(wrong, str(out_dir))
    assert summary["eval"]["num_views"] == 2 and summary["checkpoint"] == str(moved)
    rows, npz = read_outputs(str(out_dir), "train_5")
    ids, _, logits, feats = reference(cfg, module, params, "train[:5]", num_clips=2)
    assert [r["video_id"] for r in rows] == ids and len(ids) == 5
    np.testing.assert_allclose(npz["logits"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(npz["features"], feats, rtol=1e-5, atol=1e-5)


def test_rows_keep_the_one_process_order_for_any_process_count(run):
    cfg = run[0]

    def ids(split, p, n):  # the real examples process p of n reads, in its order
        return [v.decode() for b in pipeline.eval_iterator(
            cfg.data, ("rgb",), 4 * n, split=split, process_index=p, process_count=n)
            for v, m in zip(b["video_id"], b["mask"]) if m > 0]

    for split in ("validation", "train[2:]+validation"):  # a "+" split: parts not contiguous
        one = ids(split, 0, 1)
        np.testing.assert_array_equal(pipeline.eval_positions(cfg.data, split), range(len(one)))
        for n in (2, 3):
            placed = [None] * len(one)
            for p in range(n):
                for pos, vid in zip(pipeline.eval_positions(cfg.data, split, p, n),
                                    ids(split, p, n), strict=True):
                    placed[pos] = vid
            assert placed == one, (split, n)


def test_meta_is_built_in_one_place():
    cfg = recipes.base_config("tiny", "flow")
    cfg.data.flow_channels = 3
    meta = checkpoint_meta.build(cfg, ["a", "b"], "flow_run")
    assert checkpoint_meta.missing_fields(meta) == []
    pre = meta["preprocessing"]
    assert (pre["modality"], pre["inputs"], pre["channels"]) == ("flow", ["flow"], 3)
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["image_size"] == 32
    layout = checkpoint_meta.build(recipes.base_config("tiny", "layout"), ["a"], "layout_run")
    assert layout["preprocessing"]["inputs"] == ["boxes", "categories"]
    assert "mean" not in layout["preprocessing"]
    assert checkpoint_meta.build(recipes.base_config("tiny", "omni"), ["a"], "o")[
        "preprocessing"]["inputs"] == ["rgb"]  # omnivore models are evaluated on RGB
    broken = {k: v for k, v in meta.items() if k != "label_names"}
    broken["preprocessing"] = {k: v for k, v in pre.items() if k != "image_size"}
    assert checkpoint_meta.missing_fields(broken) == ["label_names",
                                                      "preprocessing.image_size"]
    assert analysis.file_tag("train[:10%]") == "train_10pct"
