"""Teacher members are not selected on the reported split: the teacher uses each member's last
checkpoint, not the one with the best eval top-1 (the eval split is the one results report)."""
import os

import jax
import numpy as np
import pytest

from mmkd_jax import recipes
from mmkd_jax.train import checkpoint, members, state, trainer


def _member_workdir(root: str) -> tuple[str, dict]:
    """A member run whose best-scoring checkpoint (step 1, top-1 90) is not its last (step 2,
    top-1 10); returns (workdir, {step: params})."""
    wd = os.path.join(root, "members", "baseline_rgb")
    os.makedirs(wd)
    cfg = trainer.resolve_config(recipes.base_config("tiny", "rgb"))
    with open(os.path.join(wd, members.CONFIG_FILE), "w") as f:
        f.write(cfg.to_json_best_effort())
    module = members.models.build_model(cfg.model)
    shapes = state.abstract_params(module, "rgb", cfg.data, None)
    saved = {}
    ckpt = checkpoint.Checkpointer(os.path.join(wd, "checkpoints"), keep=1, async_save=False)
    for step, top1 in ((1, 90.0), (2, 10.0)):
        rng = np.random.default_rng(step)
        saved[step] = jax.tree.map(lambda s, r=rng: r.normal(size=s.shape).astype(np.float32),
                                   shapes)
        ckpt.save(step, saved[step], {"count": np.zeros((), np.int32)}, {"step": step},
                  metrics={"top1": top1})
    ckpt.close()
    return wd, saved


@pytest.mark.parametrize("choice, expected_step", [(None, 2), ("latest", 2), ("best", 1)])
def test_teacher_uses_the_last_checkpoint(tmp_path, choice, expected_step):
    wd, saved = _member_workdir(str(tmp_path))
    ckpt = checkpoint.Checkpointer(os.path.join(wd, "checkpoints"), read_only=True)
    assert ckpt.best_step() == 1 and ckpt.latest_step() == 2  # the two really differ
    parent = recipes.base_config("tiny", "rgb")
    parent.teacher.members = recipes.teacher_members(["rgb"], "tiny", "configs")
    if choice is None:
        del parent.teacher["checkpoint"]  # configs written before the key existed
    else:
        parent.teacher.checkpoint = choice
    mesh_sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    loaded, infos = members.load(parent, str(tmp_path), mesh_sharding)
    assert infos[0]["step"] == expected_step
    for a, b in zip(jax.tree.leaves(loaded[0][1]), jax.tree.leaves(saved[expected_step])):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_recipes_default_to_the_last_checkpoint():
    for preset in ("synthetic", "ssv2"):
        assert recipes.base_config(preset, "rgb").teacher.checkpoint == "latest"
    with pytest.raises(ValueError, match="teacher.checkpoint='final'"):
        members.member_step(None, "final")

