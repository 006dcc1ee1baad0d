"""The whole Table 1 pipeline at tiny size: every row on both splits, the outputs, and that the
teacher rows are the logit average of the baselines they were built from.

Each run is cut to a few steps (the numbers are not meaningful, only their plumbing is); the
3-seed table on the full synthetic dataset is docs/results/table1.md.
"""
import glob
import json
import os

import jax
import numpy as np
import pytest

from mmkd_jax import table1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("standard", "compositional")
STEPS = 2


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    from configs import table1 as table1_config

    config = table1_config.get_config("tiny")
    config.overrides = f"total_steps={STEPS}"
    workdir = str(tmp_path_factory.mktemp("table1"))
    return config, workdir, table1.run(config, workdir)


def test_every_row_and_file(tiny_table):
    config, workdir, table = tiny_table
    on_disk = json.load(open(os.path.join(workdir, "table1.json")))
    assert on_disk["cells"] == table["cells"] and on_disk["seeds"] == [0]
    row_ids = [r[0] for r in table1.ROWS]
    assert len(row_ids) == 10
    for split in SPLITS:
        assert sorted(table["cells"][split]) == sorted(row_ids)
        for row_id in row_ids:
            top1, top5 = (table["cells"][split][row_id][k]["mean"] for k in ("top1", "top5"))
            assert 0.0 <= top1 <= top5 <= 100.0, (split, row_id, top1, top5)
            assert table["cells"][split][row_id]["top1"]["std"] == 0.0  # one seed
    # 3 teachers x 2 splits, 3 students x 2 splits, 3 gains, student vs omnivore x 2, 2 drops.
    assert len(table["claims"]) == 19
    text = open(os.path.join(workdir, "table1.md")).read()
    for row_id in row_ids:
        assert text.count(f"(`{row_id}`)") == 1
    assert text.count("<sub>") == 2 * 2 * 3  # top-1 and top-5 gains of 3 students, 2 splits
    for name in ("table1.png", "table1_curves.png"):
        png = open(os.path.join(workdir, name), "rb").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
    for split in SPLITS:
        for row_id in table1.CURVE_ROWS:
            curve = table["curves"][split][row_id]
            run = json.load(open(os.path.join(workdir, split, "seed0", row_id, "results.json")))
            assert curve["epoch"] == [round(h["epoch"], 6) for h in run["history"]]
            assert curve["mean"] == [h["top1"] for h in run["history"]]
    for split in SPLITS:
        for row_id, kind, *_ in table1.ROWS:
            run_dir = os.path.join(workdir, split, "seed0", row_id)
            results = json.load(open(os.path.join(run_dir, "results.json")))
            if kind == "Teacher":
                assert [m["name"] for m in results["members"]] == row_id.split("_")[1:]
                continue
            assert results["steps"] == STEPS, (split, row_id)
            assert glob.glob(os.path.join(run_dir, "**", "events.out.tfevents.*"),
                             recursive=True), f"no TensorBoard log in {run_dir}"


def test_teacher_is_the_mean_of_its_members(tiny_table):
    """The table's three-modality teacher cell, recomputed here from the members' own logits."""
    from mmkd_jax.data import pipeline
    from mmkd_jax.models import MODALITY_KEYS
    from mmkd_jax.train import members as members_lib
    from mmkd_jax.train import sharding, steps

    config, workdir, table = tiny_table
    row = next(r for r in table1.ROWS if r[0] == "teacher_rgb_flow_layout")
    wd = os.path.join(workdir, "standard", "seed0", row[0])
    cfg = table1.run_config(config, row, config.splits["standard"], seed=0)
    members, _ = members_lib.load(cfg, wd, sharding.replicated(sharding.make_mesh()))
    assert [m[2] for m in members] == ["rgb", "flow", "layout"]
    ensemble = jax.jit(steps.ensemble_logits_fn(members))
    correct, count, checked = 0, 0, 0
    for batch in pipeline.eval_iterator(cfg.data, steps.member_keys(members), 8):
        batch.pop("video_id")
        per_member = [np.asarray(module.apply(
            params if "params" in params else {"params": params},
            *[batch[k] for k in MODALITY_KEYS[modality]], train=False))
            for module, params, modality in members]
        mean = np.mean(per_member, axis=0)
        np.testing.assert_allclose(np.asarray(ensemble([p for _, p, _ in members], batch)),
                                   mean, rtol=1e-5, atol=1e-5)
        real = batch["mask"] > 0
        correct += int((mean.argmax(-1) == batch["label"])[real].sum())
        count += int(real.sum())
        checked += 1
    assert checked > 0
    cell = table["cells"]["standard"][row[0]]["top1"]["mean"]
    assert cell == pytest.approx(100.0 * correct / count, abs=1e-6)
