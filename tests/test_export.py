"""export: the SavedModel and the TFLite model answer like the JAX model on the eval set.

The SavedModel (polymorphic batch) is written in-process with `export.export`, the TFLite model
(fixed batch 1) with the command line, both from the tiny trained RGB run's checkpoint, and both
run on the whole synthetic eval split (28 clips) as the eval pipeline prepares it.
"""
import json
import os
import subprocess
import sys

import fixtures_deploy as fx
import ml_collections
import numpy as np
import pytest

from mmkd_jax import export, inference
from mmkd_jax.data import pipeline

# jax2tf runs the same StableHLO through TF's XLA (SavedModel); TFLite re-lowers it to its own
# kernels. Measured max |logit difference| on the eval set: ~1e-7 (logits of magnitude ~1).
LOGIT_TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return inference.load(fx.trained_rgb_workdir())


@pytest.fixture(scope="module")
def eval_pixels(model):
    """The eval split as the pipeline prepares it, turned back into [0, 255] pixels (the
    exported models' input); and the JAX logits of the pipeline's own normalised clips."""
    data_cfg = ml_collections.ConfigDict(model.config["data"])
    batch = next(iter(pipeline.eval_iterator(data_cfg, ("rgb",), 28)))
    pre = model.preprocessing
    pixels = (batch["rgb"] * np.float32(pre.std) + np.float32(pre.mean)) * np.float32(255.0)
    return pixels, model.logits(batch["rgb"])


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    saved = str(out / "student_saved_model")
    card = export.export(model, "saved_model", saved)
    tflite = str(out / "student.tflite")
    cmd = [sys.executable, "-m", "mmkd_jax.export", f"--checkpoint={model.source['path']}",
           "--format=tflite", f"--out={tflite}"]
    run = subprocess.run(cmd, cwd=fx.REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"wrote tflite {tflite}" in run.stdout
    return {"saved_model": (saved, card), "tflite": (tflite, None)}


@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_export_matches_jax_on_the_eval_set(fmt, exports, eval_pixels):
    pixels, jax_logits = eval_pixels
    runner = export.RUNNERS[fmt](exports[fmt][0])
    if fmt == "saved_model":  # polymorphic batch: the whole split in one call
        out = runner(pixels)
    else:  # fixed batch 1
        per_clip = [runner(pixels[i:i + 1]) for i in range(len(pixels))]
        out = {k: np.concatenate([o[k] for o in per_clip]) for k in per_clip[0]}
    assert out["logits"].shape == jax_logits.shape == (28, 14)
    np.testing.assert_array_equal(out["logits"].argmax(-1), jax_logits.argmax(-1))
    np.testing.assert_allclose(out["logits"], jax_logits, atol=LOGIT_TOL, rtol=0)
    np.testing.assert_allclose(out["probabilities"], inference.softmax(jax_logits), atol=1e-6)


def test_model_card_and_labels(model, exports):
    workdir = fx.trained_rgb_workdir()
    results = json.load(open(os.path.join(workdir, "results.json")))
    for fmt, (path, _) in exports.items():
        paths = export.card_paths(fmt, path)
        card = json.load(open(paths["json"]))
        batch = "batch" if fmt == "saved_model" else 1
        assert card["input"]["shape"] == [batch, 8, 32, 32, 3]
        assert card["labels"] == model.label_names
        assert open(paths["labels"]).read().splitlines() == model.label_names
        assert card["accuracy"]["top1"] == results["final"]["top1"]
        assert card["source"]["step"] == fx.RGB_STEPS
        assert card["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
        assert card["check_vs_jax"]["max_abs_logit_diff"] < LOGIT_TOL
        assert card["check_vs_jax"]["top1_agreement"] == 1.0
        md = open(paths["md"]).read()
        assert f"top-1 {results['final']['top1']:.2f}%" in md
        assert f"13. {model.label_names[13]}" in md and "(x - mean) / std" in md


def test_export_without_normalisation_takes_normalised_clips(model, tmp_path):
    out = str(tmp_path / "raw")
    card = export.export(model, "saved_model", out, batch_size=2, normalize_in_model=False,
                         platforms=("cpu",))
    assert card["input"]["shape"] == [2, 8, 32, 32, 3]
    assert card["preprocessing"]["inside"] == []
    clip = model.preprocessing.normalize(
        np.random.default_rng(1).uniform(0, 255, (2, 8, 32, 32, 3)).astype(np.float32))
    np.testing.assert_allclose(export.RUNNERS["saved_model"](out)(clip)["logits"],
                               model.logits(clip), atol=LOGIT_TOL, rtol=0)


def test_tflite_refuses_a_polymorphic_batch(model, tmp_path):
    with pytest.raises(ValueError, match="fixed batch size"):
        export.export(model, "tflite", str(tmp_path / "x.tflite"), batch_size=0)


def test_batch_loop_saved_model_takes_any_batch(model, tmp_path):
    """The fallback for models whose symbolic batch TF cannot run: a loop over batch-1 calls."""
    out = str(tmp_path / "loop")
    spec = export.ExportSpec(None, True, ("cpu",), batch_loop=True)
    with export.stablehlo_compat(spec.stablehlo_target):
        export.export_saved_model(model, out, spec)
    run = export.RUNNERS["saved_model"](out)
    for batch in (1, 3):
        pixels = export.check_input(model, spec, batch, seed=batch)
        np.testing.assert_allclose(run(pixels)["logits"],
                                   model.logits(model.preprocessing.normalize(pixels)),
                                   atol=LOGIT_TOL, rtol=0)
