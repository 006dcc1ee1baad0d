"""The main command end to end at tiny size: devices, hosts, resume, config errors.

Each test runs `python -m mmkd_jax.main` in a subprocess, as a user would, on the tiny
synthetic dataset (built once per session into the test TFDS dir, see conftest.py).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from mmkd_jax.convert.naming import flatten
from mmkd_jax.train import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_RGB = ["--config=configs/baseline_rgb.py:tiny", "--config.log_every_steps=1"]


def main_cmd(workdir, *flags):
    return [sys.executable, "-m", "mmkd_jax.main", f"--workdir={workdir}", *flags]


def run_main(workdir, *flags, env=None, timeout=600, check=True):
    out = subprocess.run(main_cmd(workdir, *flags), cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out


def final_params(workdir):
    """(latest step, params as NumPy, meta) of a run, whatever topology saved it."""
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    step = ckpt.latest_step()
    params = ckpt.restore_params(step)
    return step, jax.tree.map(np.asarray, params), ckpt.restore_meta(step)


def losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


# Reduction order differs across device/process layouts. Adam's g / sqrt(v) turns float noise on
# near-zero gradients into up to a fraction of one step (lr 1e-3 here), so parameters are
# compared at 2e-4 absolute while the losses must agree to 1e-5 relative.
PARAM_TOL = {"rtol": 1e-4, "atol": 2e-4}


def without_key_bias(params) -> dict:
    """Params without the key third of each qkv bias: its gradient is zero in exact arithmetic
    (softmax ignores a shift shared by all keys), so Adam turns float rounding there into
    lr-sized steps that differ between any two summation orders."""
    out = {}
    for path, value in flatten(params).items():
        if path.endswith("qkv/bias"):
            third = value.shape[-1] // 3
            value = np.concatenate([value[..., :third], value[..., 2 * third:]], -1)
        out[path] = value
    return out


def assert_params_close(got, ref):
    """Trained parameters of two layouts agree to PARAM_TOL, path by path, key biases aside."""
    got, ref = without_key_bias(got), without_key_bias(ref)
    assert sorted(got) == sorted(ref)
    for path in sorted(ref):
        np.testing.assert_allclose(got[path], ref[path], err_msg=path, **PARAM_TOL)


@pytest.fixture(scope="module")
def single_device_run(tmp_path_factory):
    """The reference: 1 device, 1 process, data in 2 shards, 6 steps."""
    wd = tmp_path_factory.mktemp("ref")
    run_main(wd, *TINY_RGB, "--config.total_steps=6", "--config.data.num_shards=2")
    return wd


def test_results_and_logs_are_written(single_device_run):
    wd = single_device_run
    results = json.load(open(wd / "results.json"))
    assert 0.0 <= results["final"]["top1"] <= results["final"]["top5"] <= 100.0
    assert results["final"]["num_examples"] > 0 and results["steps"] == 6
    assert sorted(losses(wd)) == [1, 2, 3, 4, 5, 6]
    assert list((wd / "log.txt").read_text().splitlines())
    assert any(p.name.startswith("events.out.tfevents") for p in wd.iterdir())
    config = json.load(open(wd / "config.json"))
    assert config["model"]["num_classes"] > 0  # resolved from the dataset's label map


def test_four_devices_match_one_device(single_device_run, tmp_path):
    run_main(tmp_path, *TINY_RGB, "--config.total_steps=6", "--config.data.num_shards=2",
             env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    ref_losses, got_losses = losses(single_device_run), losses(tmp_path)
    np.testing.assert_allclose([got_losses[s] for s in sorted(ref_losses)],
                               [ref_losses[s] for s in sorted(ref_losses)], rtol=1e-5)
    _, ref, _ = final_params(single_device_run)
    _, got, _ = final_params(tmp_path)
    assert_params_close(got, ref)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(single_device_run, tmp_path):
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid)}
        procs.append(subprocess.Popen(
            main_cmd(tmp_path, *TINY_RGB, "--config.total_steps=6",
                     "--config.data.num_shards=2"),
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, so[-2000:] + se[-6000:]
    ref_losses, got_losses = losses(single_device_run), losses(tmp_path)
    np.testing.assert_allclose([got_losses[s] for s in sorted(ref_losses)],
                               [ref_losses[s] for s in sorted(ref_losses)], rtol=1e-5)
    _, ref, _ = final_params(single_device_run)
    _, got, _ = final_params(tmp_path)
    assert_params_close(got, ref)
    got_eval = json.load(open(tmp_path / "results.json"))["final"]
    ref_eval = json.load(open(single_device_run / "results.json"))["final"]
    assert got_eval["num_examples"] == ref_eval["num_examples"]  # nothing dropped or doubled
    assert abs(got_eval["top1"] - ref_eval["top1"]) < 1e-6


def test_sigterm_then_resume_equals_uninterrupted(tmp_path):
    flags = [*TINY_RGB, "--config.total_steps=40", "--config.checkpoint_every_steps=5"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_main(full, *flags)

    proc = subprocess.Popen(main_cmd(resumed, *flags), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpt_dir = resumed / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err[-4000:]
    interrupted_at, _, _ = final_params(resumed)
    assert 0 < interrupted_at < 40, interrupted_at
    assert "rerun the same command to resume" in err

    out = run_main(resumed, *flags)
    assert f"from its own checkpoint at step {interrupted_at}" in out.stderr
    step_a, params_a, _ = final_params(full)
    step_b, params_b, _ = final_params(resumed)
    assert step_a == step_b == 40
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)  # exactly, not approximately
    la, lb = losses(full), losses(resumed)
    assert [la[s] for s in range(1, 41)] == [lb[s] for s in range(1, 41)]


def test_bad_configs_fail_before_compute(tmp_path):
    out = run_main(tmp_path / "a", *TINY_RGB, "--config.modle.depth=3", check=False)
    assert out.returncode != 0 and "modle" in out.stderr
    out = run_main(tmp_path / "b", *TINY_RGB, "--config.model.depthh=3", check=False)
    assert out.returncode != 0 and "depthh" in out.stderr
    # A teacher member reading other clips than the student: stopped before any training.
    out = run_main(tmp_path / "c", "--config=configs/distill.py:tiny",
                   "--config.teacher.members[0].overrides=data.num_frames=4", check=False)
    assert out.returncode != 0 and "does not match the student" in out.stderr
    assert not (tmp_path / "c" / "members").exists()


def test_missing_real_data_gives_the_build_command(tmp_path):
    out = run_main(tmp_path / "a", "--config=configs/baseline_rgb.py:ssv2",
                   f"--config.data.data_dir={tmp_path / 'no_data'}", check=False)
    assert out.returncode != 0 and "build" in out.stderr and "something_something_v2" in out.stderr
