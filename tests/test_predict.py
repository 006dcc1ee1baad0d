"""predict and the shared inference module: eval preprocessing parity, loading, the CLI.

The CLI runs as a user would (subprocess) on a checkpoint copied to a new folder without the
run's config.json, results.json or optimiser state, on real footage (opencv-doc's tree.avi
re-encoded to VP9 webm), on a synthetic clip (as a frame folder of its record's JPEGs and as an
mp4), on a corrupt file and on a missing path.
"""
import json
import os
import shutil
import subprocess
import sys

import fixtures_deploy as fx
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from fixtures_ssv2 import footage, read_frames, write_webm

from mmkd_jax import inference
from mmkd_jax.data import color, pipeline, sampling, spatial

# Inputs: our NumPy preprocessing of OpenCV-decoded JPEGs vs the TF pipeline (libjpeg accurate
# DCT): measured max 7.2e-7 on the tiny eval set (float32 rounding of the resize weights).
INPUT_TOL = 1e-5
LOGIT_TOL = 1e-5


def test_frame_indices_and_crop_equal_the_pipeline():
    for length in range(1, 41):
        for t in (1, 4, 8):
            np.testing.assert_array_equal(inference.eval_indices(length, t),
                                          sampling.eval_indices(tf.constant(length), t).numpy())
    for h, w in [(240, 320), (240, 427), (48, 48), (97, 64), (64, 97), (1, 5)]:
        window = spatial.eval_window(tf.constant([h, w]))
        top, left, hh, ww = spatial.pixel_window(window, tf.constant([h, w])).numpy()
        assert hh == ww
        assert inference.centre_square(h, w) == (top, left, hh)


@pytest.mark.parametrize("side, size", [(48, 32), (240, 224), (37, 64), (31, 16)])
def test_resize_equals_the_pipeline_resize(side, size):
    frames = np.random.default_rng(side).integers(0, 256, (2, side, side, 3), np.uint8)
    ours = inference.resize_bilinear(frames, size)
    ref = spatial.resize(tf.constant(frames), size).numpy()
    # Same float32 weights as TF, products summed in another order: a few ULPs of 255.
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)  # measured max 3.1e-5


def test_normalisation_constants_equal_the_pipeline():
    assert inference.IMAGENET_MEAN == color.IMAGENET_MEAN
    assert inference.IMAGENET_STD == color.IMAGENET_STD
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    pre = inference.Preprocessing(8, 4)
    np.testing.assert_allclose(pre.normalize(x), color.normalize(x / 255.0).numpy(), atol=1e-6)


def test_resolve_checkpoint_paths(tmp_path):
    step_dir = tmp_path / "run" / "checkpoints" / "12"
    (step_dir / "meta").mkdir(parents=True)
    ckpts = str(tmp_path / "run" / "checkpoints")
    assert inference.resolve_checkpoint(str(tmp_path / "run")) == (ckpts, None)
    assert inference.resolve_checkpoint(ckpts) == (ckpts, None)
    assert inference.resolve_checkpoint(str(step_dir)) == (ckpts, 12)
    assert inference.resolve_checkpoint(ckpts, step=12) == (ckpts, 12)
    with pytest.raises(ValueError, match="step 12, not 7"):
        inference.resolve_checkpoint(str(step_dir), step=7)
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        inference.resolve_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        inference.resolve_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="exactly one"):
        inference.load_model(workdir=str(tmp_path), checkpoint=ckpts)


def test_top_k_is_sorted_softmax():
    logits = np.array([0.5, 3.0, -1.0, 2.0], np.float32)
    top = inference.top_k(logits, ["a", "b", "c", "d"], k=3)
    assert [t["label"] for t in top] == ["b", "d", "a"]
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose([t["probability"] for t in top], expected[[1, 3, 0]], rtol=1e-6)


@pytest.fixture(scope="module")
def workdir():
    return fx.trained_rgb_workdir()


@pytest.fixture(scope="module")
def model(workdir):
    return inference.load(workdir)


@pytest.fixture(scope="module")
def eval_batch(model):
    data_cfg = ml_collections.ConfigDict(model.config["data"])
    n = pipeline.num_examples(data_cfg)
    batch = next(iter(pipeline.eval_iterator(data_cfg, ("rgb",), n)))
    ids = [v.decode() for v in batch["video_id"]]
    return ids, batch["rgb"], fx.eval_records(data_cfg)


def test_load_reads_everything_from_the_checkpoint(workdir, model):
    results = json.load(open(os.path.join(workdir, "results.json")))
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert model.source["step"] == fx.RGB_STEPS and model.modality == "rgb"
    assert model.preprocessing == inference.Preprocessing(8, 32)
    assert len(model.label_names) == config["model"]["num_classes"] == 14
    assert model.accuracy()["top1"] == results["final"]["top1"]


def test_logits_equal_the_eval_pipeline(model, eval_batch):
    """Decoding the record JPEGs ourselves + our preprocessing == the TF eval pipeline."""
    ids, pipeline_rgb, records = eval_batch
    ours = np.stack([model.preprocessing(fx.decode_jpegs(records[v]["jpegs"])) for v in ids])
    assert ours.shape == pipeline_rgb.shape == (28, 8, 32, 32, 3)
    assert np.abs(ours - pipeline_rgb).max() < INPUT_TOL
    np.testing.assert_allclose(model.logits(ours), model.logits(pipeline_rgb), atol=LOGIT_TOL,
                               rtol=0)


def run_predict(*args):
    return subprocess.run([sys.executable, "-m", "mmkd_jax.predict", *args], cwd=fx.REPO,
                          capture_output=True, text=True, timeout=300)


def test_predict_cli_on_a_copied_checkpoint(workdir, model, eval_batch, tmp_path):
    ids, pipeline_rgb, records = eval_batch
    # Only the checkpoint step dir travels, and not even its optimiser state: no config.json,
    # no results.json.
    step = str(fx.RGB_STEPS)
    copy = tmp_path / "elsewhere" / "checkpoints" / step
    shutil.copytree(os.path.join(workdir, "checkpoints", step), copy,
                    ignore=shutil.ignore_patterns("opt_state"))
    assert sorted(os.listdir(tmp_path / "elsewhere")) == ["checkpoints"]
    assert "params" in os.listdir(copy) and "opt_state" not in os.listdir(copy)

    clip_id = ids[0]
    folder = fx.write_frame_folder(str(tmp_path / "clip_frames"), records[clip_id]["jpegs"])
    mp4 = fx.write_mp4(str(tmp_path / "clip.mp4"), fx.decode_jpegs(records[clip_id]["jpegs"]))
    tree = str(tmp_path / "tree.webm")
    write_webm(tree, read_frames(footage("tree.avi"), 0, 68))
    corrupt = fx.write_corrupt_video(str(tmp_path / "corrupt.mp4"))
    missing = str(tmp_path / "missing.avi")

    out = run_predict(f"--checkpoint={copy}", "--json", tree, corrupt, folder, missing, mp4)
    assert out.returncode == 1, out.stderr[-3000:]  # 1: some files failed, the rest printed
    assert f"error: {corrupt}: VideoReadError" in out.stderr
    assert f"error: {missing}: FileNotFoundError" in out.stderr
    doc = json.loads(out.stdout)
    assert doc["model"]["step"] == fx.RGB_STEPS
    res = doc["results"]
    assert [r["path"] for r in res] == [tree, corrupt, folder, missing, mp4]
    assert "cannot decode video" in res[1]["error"] and corrupt in res[1]["error"]
    assert "error" in res[3]
    for r in (res[0], res[2], res[4]):
        probs = [t["probability"] for t in r["top"]]
        assert len(r["top"]) == 5 and probs == sorted(probs, reverse=True)
        assert 0.0 < sum(probs) <= 1.0 + 1e-6
        assert all(t["label"] == model.label_names[t["class_id"]] for t in r["top"])
    assert res[0]["num_frames"] == 68 and res[0]["frame_size"] == [240, 320]
    # The frame folder holds the record's own JPEGs: same answer as the eval pipeline.
    expected = inference.top_k(model.logits(pipeline_rgb[:1])[0], model.label_names)
    assert [t["class_id"] for t in res[2]["top"]] == [t["class_id"] for t in expected]
    np.testing.assert_allclose([t["probability"] for t in res[2]["top"]],
                               [t["probability"] for t in expected], atol=1e-5)

    # Text output, from the checkpoints dir (best step), all files readable: exit status 0.
    out = run_predict(f"--checkpoint={copy.parent}", "--top_k=3", folder)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(f"{folder}  (16 frames, 48x48)")
    assert len(lines) == 4 and lines[1].strip().startswith("1.")
    assert lines[1].endswith(expected[0]["label"])


@pytest.mark.torch
def test_load_hf_uses_its_labels_and_normalisation(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.TimesformerConfig(
        image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=3,
        id2label={0: "push", 1: "pull", 2: "spin"}, label2id={"push": 0, "pull": 1, "spin": 2})
    torch.manual_seed(0)
    hf = transformers.TimesformerForVideoClassification(cfg).eval()
    hf.save_pretrained(tmp_path)
    with open(tmp_path / "preprocessor_config.json", "w") as f:
        json.dump({"image_mean": [0.45, 0.45, 0.45], "image_std": [0.225, 0.225, 0.225],
                   "crop_size": {"height": 32, "width": 32}}, f)
    model = inference.load_model(hf_dir=str(tmp_path))  # predict's --hf_dir
    assert model.label_names == ["push", "pull", "spin"] and model.source["kind"] == "huggingface"
    assert model.preprocessing == inference.Preprocessing(4, 32, (0.45,) * 3, (0.225,) * 3)
    frames = np.random.default_rng(0).integers(0, 256, (10, 40, 50, 3), np.uint8)
    clip = model.preprocessing(frames)[None]
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(clip).permute(0, 1, 4, 2, 3)).logits.numpy()
    np.testing.assert_allclose(model.logits(clip), ref, atol=1e-4)


def test_accuracy_is_that_of_the_loaded_step():
    history = [{"step": 7, "top1": 40.0, "top5": 80.0, "num_examples": 28},
               {"step": 14, "top1": 30.0, "top5": 70.0, "num_examples": 28}]
    results = {"experiment": "s", "steps": 14, "final": history[1], "history": history,
               "dataset": "d", "split": "validation", "protocol": "p",
               "teacher": {"top1": 50.0, "top5": 90.0}}
    model = inference.LoadedModel(None, None, "rgb", ["a"], inference.Preprocessing(8, 32),
                                  {"step": 7, "metrics": {"top1": 40.0}}, results=results)
    acc = model.accuracy()
    assert (acc["top1"], acc["top5"], acc["step"], acc["teacher"]["top1"]) == (40.0, 80.0, 7, 50.0)
    model.source.update(step=14, metrics={"top1": 30.0})
    assert model.accuracy()["top1"] == 30.0
    model.results = None  # a copied checkpoint: the eval saved with it
    assert model.accuracy() == {"top1": 30.0, "step": 14,
                                "source": "checkpoint metrics (eval at this step)"}
