"""Fine-tune vs resume: `init_from` kind `checkpoint` and what the trainer does with it.

Unit tests build a source checkpoint directly (orbax, no training); the trainer tests run the
normal trainer in-process on the tiny synthetic dataset (built once per session, conftest.py).
"""
import logging
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmkd_jax import checkpoint_meta, convert, models
from mmkd_jax.convert.naming import flatten
from mmkd_jax.train import checkpoint, members

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMESFORMER = {"name": "timesformer", "variant": "tiny", "num_frames": 4}
STLT = {"name": "stlt", "variant": "tiny", "num_frames": 4}


def random_params(module, seed, *inputs):
    """Random values in the module's parameter shapes (tracing only: no compile, fast)."""
    shapes = jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, *inputs,
                                                train=False)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def init(model_cfg, num_classes, seed, modality="rgb"):
    module = models.build_model({**model_cfg, "num_classes": num_classes})
    batch = {"rgb": np.zeros((1, 4, 32, 32, 3), np.float32),
             "boxes": np.zeros((1, 4, 8, 4), np.float32),
             "categories": np.zeros((1, 4, 8), np.int32)}
    return module, random_params(module, seed, *models.model_inputs(modality, batch))


def save_source(root, params, label_names, step=7):
    """A run's workdir with one checkpoint (params, a non-fresh opt_state, meta)."""
    ckpt = checkpoint.Checkpointer(os.path.join(root, "checkpoints"), async_save=False)
    opt_state = {"count": np.int32(123)}
    ckpt.save(step, params, opt_state, {"experiment": "source", "label_names": label_names,
                                        "step": step})
    ckpt.close()
    return root


def leaves(params):
    return {k: np.asarray(v) for k, v in flatten(params).items()}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    _, params = init(TIMESFORMER, 4, seed=0)
    root = save_source(str(tmp_path_factory.mktemp("source")), params, ["a", "b", "c", "d"])
    return root, leaves(params)


def test_other_classes_reinitialise_the_head_and_copy_the_rest(source):
    root, src = source
    module, fresh = init(TIMESFORMER, 3, seed=1)
    # A workdir, its checkpoints dir and the step dir all name the same checkpoint.
    for path in (root, os.path.join(root, "checkpoints"), os.path.join(root, "checkpoints", "7")):
        params, report = convert.init_from("checkpoint", path, module, fresh,
                                           label_names=["x", "y", "z"])
        got, init_leaves = leaves(params), leaves(fresh)
        for key, value in got.items():
            if key.startswith("head/"):
                np.testing.assert_array_equal(value, init_leaves[key])  # fresh init kept
            else:
                np.testing.assert_array_equal(value, src[key])  # copied exactly
        assert [m.split(" ")[0] for m in report.missing] == ["head/bias", "head/kernel"]
        assert sorted(u.split(" ")[0] for u in report.unused) == ["head/bias", "head/kernel"]
        assert report.reshaped == []
    assert sum(v.size for k, v in got.items() if not k.startswith("head/")) > 30000


def test_same_classes_copy_everything_other_names_do_not(source):
    root, src = source
    module, fresh = init(TIMESFORMER, 4, seed=1)
    params, report = convert.init_from("checkpoint", root, module, fresh,
                                       label_names=["a", "b", "c", "d"])
    assert report.missing == report.unused == []
    for key, value in leaves(params).items():
        np.testing.assert_array_equal(value, src[key])
    # Same count, another order: the head would predict the wrong classes, so it is not copied.
    params, report = convert.init_from("checkpoint", root, module, fresh,
                                       label_names=["b", "a", "c", "d"])
    np.testing.assert_array_equal(leaves(params)["head/kernel"], leaves(fresh)["head/kernel"])
    assert report.missing == ["head/bias", "head/kernel"]
    assert all("label maps differ" in u for u in report.unused)


def test_any_model_and_clear_errors(tmp_path):
    _, src_params = init(STLT, 5, seed=0, modality="layout")
    root = save_source(str(tmp_path / "stlt"), src_params, list("abcde"))
    module, fresh = init(STLT, 2, seed=1, modality="layout")
    params, report = convert.init_from("checkpoint", root, module, fresh, label_names=["p", "q"])
    assert [m.split(" ")[0] for m in report.missing] == ["head_fc2/bias", "head_fc2/kernel"]
    np.testing.assert_array_equal(leaves(params)["head_fc1/kernel"],
                                  leaves(src_params)["head_fc1/kernel"])
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        convert.init_from("checkpoint", str(tmp_path), module, fresh)
    with pytest.raises(ValueError, match="unknown init kind"):
        convert.init_from("chekpoint", root, module, fresh)


# --- the trainer: fine-tune (fresh optimiser, step 0) vs resume (its own checkpoint)

def tiny_config(**overrides):
    cfg = members.load_config_file(os.path.join(REPO, "configs", "baseline_rgb.py"), "tiny")
    cfg.log_every_steps = 1
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def messages(caplog):
    return "\n".join(r.getMessage() for r in caplog.records)


def test_fine_tune_starts_fresh_and_a_rerun_resumes(tmp_path, caplog):
    from mmkd_jax.train import trainer

    # Source: the tiny RGB model of another "dataset" with 5 classes (saved at step 7).
    src_cfg = trainer.resolve_config(tiny_config())
    src_cfg.model.num_classes = 5
    module = models.build_model(src_cfg.model)
    params = random_params(module, 3, np.zeros((1, 8, 32, 32, 3), np.float32))
    src_root = save_source(str(tmp_path / "source"), params, list("vwxyz"))
    src = leaves(params)

    workdir = str(tmp_path / "finetune")
    cfg = tiny_config(**{"total_steps": 1, "optim.lr": 0.0, "model.init_from.kind": "checkpoint",
                         "model.init_from.path": src_root})
    # On the absl logger itself: it can carry its own WARNING level (it does after the export
    # tests ran in the same session), and then the root level alone lets no INFO through.
    caplog.set_level(logging.INFO, logger="absl")
    trainer.train_and_evaluate(cfg, workdir)
    log = messages(caplog)
    assert f"baseline_rgb: fine-tuning from checkpoint {src_root} (fresh optimiser, step 0)" in log
    assert "head re-initialised" in log and "Resuming" not in log
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    assert ckpt.manager.all_steps() == [1]  # step reset: not the source's 7 + 1
    tx_state = ckpt.manager.restore(1, args=ocp.args.Composite(
        opt_state=ocp.args.StandardRestore()))["opt_state"]
    counts = [int(np.asarray(x)) for x in jax.tree.leaves(tx_state)
              if np.asarray(x).dtype == np.int32 and np.asarray(x).ndim == 0]
    assert counts and set(counts) == {1}  # a fresh optimiser after one step (source: 123)
    got = leaves(ckpt.restore_params(1))
    assert set(got) == set(src)
    for key, value in got.items():
        if not key.startswith("head/"):
            np.testing.assert_array_equal(value, src[key])  # lr 0: exactly the copied weights
    assert got["head/kernel"].shape == (32, 14)  # the tiny synthetic dataset's 14 classes

    # Meta written by the trainer: complete, with the preprocessing spelt out.
    meta = ckpt.restore_meta(1)
    assert checkpoint_meta.missing_fields(meta) == []
    assert meta["num_classes"] == 14 and len(meta["label_names"]) == 14
    pre = meta["preprocessing"]
    assert (pre["num_frames"], pre["image_size"], pre["inputs"]) == (8, 32, ["rgb"])
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert pre["eval_views"] == {"num_clips": 1, "num_crops": 1}

    # The same command again: resumes its own checkpoint and says init_from is ignored (the run
    # is complete, so it only evaluates again).
    caplog.clear()
    shutil.rmtree(os.path.join(src_root, "checkpoints"))  # would fail loudly if it were read
    trainer.train_and_evaluate(cfg, workdir)
    log = messages(caplog)
    assert "Resuming baseline_rgb from its own checkpoint at step 1" in log
    assert "Ignoring config.model.init_from (checkpoint" in log and "fine-tuning" not in log
    np.testing.assert_array_equal(leaves(checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"), read_only=True).restore_params(1))["head/kernel"],
        got["head/kernel"])
