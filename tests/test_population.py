"""Population training: K runs in one vmapped step, each written as if it had been trained alone.

At tiny size: a population of an RGB baseline, an RGB student of an RGB + layout teacher (same
seed, one data stream), a baseline of another seed (a second stream) and a baseline on the
other split's dataset (a third stream, its own eval split) is compared with the four solo runs,
and a population interrupted after a checkpoint resumes to the same result.
"""
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

from mmkd_jax import recipes
from mmkd_jax.train import checkpoint, trainer
from tests.test_trainer_e2e import assert_params_close

STEPS = 6
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs")


def _configs(members_dir: str) -> list:
    def common(cfg, seed):
        cfg.seed = seed
        cfg.total_steps = STEPS
        cfg.log_every_steps = 1
        cfg.eval_every_epochs = 0.5  # 3 steps at tiny size: an eval before the last
        cfg.checkpoint_every_steps = 3
        return cfg

    base = lambda seed, preset="tiny": common(recipes.base_config(preset, "rgb"), seed)
    student = common(recipes.base_config("tiny", "rgb"), 0)
    student.experiment = "student_rgb_layout"
    student.teacher.members = recipes.teacher_members(["rgb", "layout"], "tiny", CONFIG_DIR)
    for spec in student.teacher.members:
        spec.workdir = os.path.join(members_dir, os.path.basename(spec.workdir))
        spec.overrides = f"total_steps={STEPS}"
    student.distill.update({"tau": 2.0, "w_kd": 1.0, "w_gt": 0.5, "mixup": 1.0})
    a, b, c = base(0), base(1), base(0, "tiny_compositional")
    a.experiment, b.experiment = "baseline_rgb_seed0", "baseline_rgb_seed1"
    c.experiment = "baseline_rgb_compositional"
    return [a, student, b, c]


def _files(workdir: str) -> list[str]:
    # TensorBoard event files carry a timestamp, host and pid in their names.
    return sorted(re.sub(r"^events\.out\.tfevents\..*", "events.out.tfevents", f)
                  for f in os.listdir(workdir))


def _final(workdir: str):
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    return ckpt.latest_step(), jax.tree.map(np.asarray, ckpt.restore_params(ckpt.latest_step()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("population")
    members_dir = str(root / "members")
    configs = _configs(members_dir)
    solo = [str(root / "solo" / c.experiment) for c in configs]
    for cfg, wd in zip(configs, solo):
        trainer.train_and_evaluate(cfg, wd)  # the student trains its members first
    pop = [str(root / "population" / c.experiment) for c in configs]
    results = trainer.train_population(list(zip(_configs(members_dir), pop)))
    return configs, solo, pop, results


def test_members_equal_their_solo_runs(runs):
    _, solo, pop, results = runs
    for s, p, res in zip(solo, pop, results):
        step_s, params_s = _final(s)
        step_p, params_p = _final(p)
        assert step_s == step_p == STEPS
        assert_params_close(params_p, params_s)
        solo_results = json.load(open(os.path.join(s, "results.json")))
        assert res == json.load(open(os.path.join(p, "results.json")))
        for a, b in zip(res["history"], solo_results["history"]):
            assert a["step"] == b["step"]
            assert a["top1"] == pytest.approx(b["top1"]) and a["top5"] == pytest.approx(b["top5"])
        solo_loss = [json.loads(x) for x in open(os.path.join(s, "metrics.jsonl"))]
        pop_loss = [json.loads(x) for x in open(os.path.join(p, "metrics.jsonl"))]
        key = lambda rows: {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
        np.testing.assert_allclose([key(pop_loss)[i] for i in range(1, STEPS + 1)],
                                   [key(solo_loss)[i] for i in range(1, STEPS + 1)], rtol=1e-5)
        # Same files, same metric names, same results keys as a solo run.
        assert _files(p) == _files(s)
        assert sorted(pop_loss[0]) == sorted(solo_loss[0])
        assert sorted(res) == sorted(solo_results)
    student = results[1]
    assert [m["name"] for m in student["members"]] == ["rgb", "layout"]
    assert "train/kd" in json.loads(open(os.path.join(pop[1], "metrics.jsonl")).readline())
    assert "train/kd" not in json.loads(open(os.path.join(pop[0], "metrics.jsonl")).readline())


def test_members_must_share_the_recipe(tmp_path):
    a, b = _configs(str(tmp_path / "members"))[0:3:2]
    b.optim.lr = 0.5
    with pytest.raises(ValueError, match=r"differs from 'baseline_rgb_seed0' in \['optim'\]"):
        trainer.train_population([(a, str(tmp_path / "a")), (b, str(tmp_path / "b"))])


def test_population_resumes_exactly(runs, tmp_path):
    """Every member back at step 3 (one of them also at 6): the rerun ends where the
    uninterrupted population did, bit for bit."""
    configs, _, pop, _ = runs
    resumed = [str(tmp_path / os.path.basename(p)) for p in pop]
    for src, dst in zip(pop, resumed):
        shutil.copytree(src, dst)
    for k, wd in enumerate(resumed):
        if k != 1:  # member 1 keeps step 6: members stopped at different steps
            shutil.rmtree(os.path.join(wd, "checkpoints", str(STEPS)))
    members_dir = configs[1].teacher.members[0].workdir.rsplit("/", 1)[0]
    trainer.train_population(list(zip(_configs(members_dir), resumed)))
    for a, b in zip(pop, resumed):
        step_a, params_a = _final(a)
        step_b, params_b = _final(b)
        assert step_a == step_b == STEPS
        for x, y in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
            np.testing.assert_array_equal(x, y)
