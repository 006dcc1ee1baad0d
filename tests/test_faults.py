"""Fault injection at tiny size, through the real commands: divergence, damaged checkpoints,
unwritable checkpoint folders, a busy workdir, bad sizes, short videos, kill -9 and resume, and
STLT checkpoints the converter cannot represent.

Each case is what a user would do; each asserts what they must see (exit status, one clear line
naming the file or key) and what must never happen (a non-finite checkpoint, a deleted step, a
hang, two runs writing one log).
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fixtures_deploy as fx
import jax
import numpy as np
import pytest
from test_trainer_e2e import _free_port

from mmkd_jax.train import checkpoint, members, steps, validate, workdir_lock

REPO = Path(__file__).resolve().parents[1]
TINY_RGB = ["--config=configs/baseline_rgb.py:tiny"]


def main_cmd(workdir, *flags, prefix=()):
    return [*prefix, sys.executable, "-m", "mmkd_jax.main", f"--workdir={workdir}", *flags]


def env(**extra):
    return {**os.environ, **fx.fast_compile_env(), **extra}


def run_main(workdir, *flags, prefix=(), timeout=600):
    return subprocess.run(main_cmd(workdir, *flags, prefix=prefix), cwd=REPO,
                          capture_output=True, text=True, env=env(), timeout=timeout)


def start_main(workdir, *flags, prefix=(), extra_env=None):
    return subprocess.Popen(main_cmd(workdir, *flags, prefix=prefix), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(**(extra_env or {})))


def wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, proc.communicate()[1][-4000:]
        time.sleep(0.02)
    raise AssertionError("timed out")


def step_dirs(ckpt_dir) -> list[int]:
    return sorted(int(p.name) for p in Path(ckpt_dir).iterdir() if p.name.isdigit())


def restore_raw(ckpt_dir, step):
    """(params, opt_state, meta) of a step as saved, without the finiteness check of readers."""
    ckpt = checkpoint.Checkpointer(str(ckpt_dir), read_only=True)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    saved = ckpt.manager.item_metadata(step)
    abstract = lambda t: jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), t)
    out = ckpt.restore(step, abstract(saved["params"]), abstract(saved["opt_state"]))
    ckpt.close()
    return jax.tree.map(np.asarray, out[:2]) + (out[2],)


def one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-4000:]


# ------------------------------------------------------------------------------- divergence
def test_divergence_is_never_saved_scored_or_served(tmp_path):
    out = run_main(tmp_path, *TINY_RGB, "--config.optim.lr=1e6",
                   "--config.checkpoint_every_steps=1", "--config.log_every_steps=5")
    assert out.returncode == 1, out.stderr[-4000:]
    one_line_error(out.stderr)
    line = next(x for x in out.stderr.splitlines() if "Non-finite loss or params" in x)
    bad_step = int(line.split("at step ")[1].split()[0])
    good_step = int(line.split("Last good checkpoint: step ")[1].split()[0])
    assert bad_step % 5 != 0  # caught between log steps: checked every step
    kept = step_dirs(tmp_path / "checkpoints")
    assert good_step == bad_step - 1 == kept[-1], (line, kept)
    assert str(tmp_path / "checkpoints") in line
    for step in kept:  # every kept checkpoint is finite, so `predict` may trust any of them
        params, opt_state, _ = restore_raw(tmp_path / "checkpoints", step)
        assert all(np.isfinite(x).all() for x in jax.tree.leaves((params, opt_state)))
    rows = [json.loads(r) for r in open(tmp_path / "metrics.jsonl")]
    assert all(r["step"] < bad_step for r in rows if "train/loss" in r)
    assert not [r for r in rows if "eval/top1" in r and r["step"] >= bad_step]


def test_non_finite_logits_score_zero():
    logits = np.array([[0.0, 5.0, 1.0], [np.nan, 0.0, 0.0], [0.0, np.inf, 0.0],
                       [np.nan] * 3], np.float32)
    labels = np.array([1, 1, 1, 0])
    counts = jax.device_get(steps.topk_correct(logits, labels, np.ones(4), ks=(1, 3)))
    assert (counts["top1"], counts["top3"], counts["count"]) == (1, 1, 4)
    assert float(steps.accuracy(logits, labels)) == 0.25


@pytest.fixture
def diverged_checkpoint(tmp_path):
    """A copy of a trained run plus one more step whose params are all NaN, scored best (as a
    run without the per-step check used to write)."""
    copy = tmp_path / "diverged"
    shutil.copytree(os.path.join(fx.trained_rgb_workdir(), "checkpoints"), copy / "checkpoints")
    ckpt_dir = copy / "checkpoints"
    step = step_dirs(ckpt_dir)[-1]
    params, opt_state, meta = restore_raw(ckpt_dir, step)
    ckpt = checkpoint.Checkpointer(str(ckpt_dir), keep=10)
    ckpt.save(step + 1, jax.tree.map(lambda x: x * np.nan, params), opt_state,
              meta | {"step": step + 1}, metrics={"top1": 100.0})
    ckpt.close()
    return copy, step + 1


def test_predict_and_export_refuse_non_finite_params(diverged_checkpoint, tmp_path):
    workdir, step = diverged_checkpoint
    clip = fx.write_mp4(str(tmp_path / "clip.mp4"), np.zeros((8, 32, 32, 3), np.uint8))
    for cmd in ([sys.executable, "-m", "mmkd_jax.predict", f"--workdir={workdir}", clip],
                [sys.executable, "-m", "mmkd_jax.export",
                 f"--checkpoint={workdir / 'checkpoints' / str(step)}",
                 f"--out={tmp_path / 'export'}"]):
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env(),
                             timeout=600)
        assert out.returncode == 1, out.stdout + out.stderr[-3000:]
        assert "non-finite params" in out.stderr and f"checkpoints/{step}" in out.stderr
        assert "nan%" not in out.stdout
    assert not (tmp_path / "export").exists()


# ------------------------------------------------------------------------- damaged checkpoints
DAMAGE_FLAGS = [*TINY_RGB, "--config.total_steps=10", "--config.checkpoint_every_steps=2",
                "--config.keep_checkpoints=4", "--config.eval_every_epochs=100"]


def truncate_an_array_file(step_dir):
    files = sorted(glob.glob(f"{step_dir}/params/ocdbt.process_0/d/*"), key=os.path.getsize)
    with open(files[-1], "r+b") as f:
        f.truncate(os.path.getsize(files[-1]) // 2)


def delete_manifests(step_dir):
    for f in glob.glob(f"{step_dir}/*/manifest.ocdbt") + glob.glob(
            f"{step_dir}/*/ocdbt.process_*/manifest.ocdbt"):
        os.remove(f)


def delete_meta(step_dir):
    os.remove(f"{step_dir}/meta/metadata")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """10 steps, checkpoints at 2, 4, 6, 8, 10 (4 kept), and its final params."""
    wd = tmp_path_factory.mktemp("damage") / "run"
    out = run_main(wd, *DAMAGE_FLAGS)
    assert out.returncode == 0, out.stderr[-4000:]
    assert step_dirs(wd / "checkpoints") == [4, 6, 8, 10]
    return wd, restore_raw(wd / "checkpoints", 10)[0]


def test_damaged_latest_steps_are_moved_aside_and_resume_is_exact(uninterrupted, tmp_path):
    src, final = uninterrupted
    wd = tmp_path / "run"
    shutil.copytree(src, wd)
    ckpts = wd / "checkpoints"
    truncate_an_array_file(ckpts / "10")
    delete_manifests(ckpts / "8")
    delete_meta(ckpts / "6")
    out = run_main(wd, *DAMAGE_FLAGS)
    assert out.returncode == 0, out.stderr[-4000:]
    one_line_error(out.stderr)
    damaged = [x for x in out.stderr.splitlines() if "is damaged" in x]
    assert [int(x.split("Checkpoint step ")[1].split()[0]) for x in damaged] == [10, 8, 6]
    assert sorted(os.listdir(wd / "checkpoints.damaged")) == ["10", "6", "8"]  # never deleted
    assert "from its own checkpoint at step 4" in out.stderr
    got = restore_raw(ckpts, 10)[0]
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(got)):
        np.testing.assert_array_equal(a, b)  # steps 5-10 again, exactly


def test_no_intact_step_fails_with_one_line(uninterrupted, tmp_path):
    src, _ = uninterrupted
    wd = tmp_path / "run"
    shutil.copytree(src, wd)
    for step in (4, 6, 8, 10):
        delete_meta(wd / "checkpoints" / str(step))
    out = run_main(wd, *DAMAGE_FLAGS)
    assert out.returncode == 1
    one_line_error(out.stderr)
    assert f"no intact checkpoint in {wd / 'checkpoints'}" in out.stderr
    assert sorted(os.listdir(wd / "checkpoints.damaged")) == ["10", "4", "6", "8"]


def test_another_models_checkpoint_is_refused_not_moved(uninterrupted, tmp_path):
    src, _ = uninterrupted
    wd = tmp_path / "run"
    shutil.copytree(src, wd)
    out = run_main(wd, *DAMAGE_FLAGS, "--config.model.depth=3")
    assert out.returncode == 1
    one_line_error(out.stderr)
    assert f"{wd / 'checkpoints' / '10'} was written by another model config" in out.stderr
    assert not (wd / "checkpoints.damaged").exists()
    assert step_dirs(wd / "checkpoints") == [4, 6, 8, 10]


# ------------------------------------------------------------------------ unwritable folders
def without_dac_override() -> list[str]:
    """Root writes into read-only folders anyway; CI runs as root, so drop that capability."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def test_read_only_checkpoints_fail_at_start(tmp_path):
    prefix = without_dac_override()
    (tmp_path / "checkpoints").mkdir()
    os.chmod(tmp_path / "checkpoints", 0o555)
    start = time.time()
    out = run_main(tmp_path, *TINY_RGB, prefix=prefix, timeout=120)
    assert out.returncode == 1 and time.time() - start < 60
    one_line_error(out.stderr)
    assert f"cannot write checkpoints to {tmp_path / 'checkpoints'}" in out.stderr


def test_checkpoints_turning_read_only_stop_the_run_within_seconds(tmp_path):
    prefix = without_dac_override()
    proc = start_main(tmp_path, *TINY_RGB, "--config.total_steps=2000",
                      "--config.checkpoint_every_steps=1", prefix=prefix)
    ckpts = tmp_path / "checkpoints"
    wait_for(lambda: ckpts.is_dir() and step_dirs(ckpts), proc)
    os.chmod(ckpts, 0o555)
    start = time.time()
    _, err = proc.communicate(timeout=120)  # a hang fails here
    assert proc.returncode == 1 and time.time() - start < 30, err[-4000:]
    assert f"writing checkpoints in {ckpts} failed" in err


# ------------------------------------------------------------------------------ busy workdir
def test_second_run_on_a_busy_workdir_refuses(tmp_path):
    first = start_main(tmp_path, *TINY_RGB, "--config.total_steps=200")
    lock = tmp_path / workdir_lock.LOCK_FILE
    wait_for(lambda: lock.exists() and f'"pid": {first.pid}' in lock.read_text(), first)
    second = run_main(tmp_path, *TINY_RGB, "--config.total_steps=200", timeout=120)
    assert second.returncode == 1
    one_line_error(second.stderr)
    assert f"{tmp_path} is in use by another run" in second.stderr
    assert f"pid {first.pid}" in second.stderr and socket.gethostname() in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-4000:]
    log = (tmp_path / "log.txt").read_text()
    assert "in use by another run" not in log and log.count("global batch") == 1
    train_steps = [json.loads(r)["step"] for r in open(tmp_path / "metrics.jsonl")
                   if "train/loss" in r]
    assert train_steps == sorted(set(train_steps))  # one run's lines, once each
    assert not lock.exists()


def test_busy_workdir_stops_every_process_of_a_multi_host_run(tmp_path):
    workdir_lock.acquire(str(tmp_path))  # this test process is the other run
    try:
        port = _free_port()
        procs = [start_main(tmp_path, *TINY_RGB, extra_env={
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i)}) for i in range(2)]
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        workdir_lock.release(str(tmp_path))
    for p, err in zip(procs, errs):
        assert p.returncode == 1 and "is in use by another run" in err, err[-3000:]
    assert f"pid {os.getpid()}" in errs[0]  # process 0 read the lock
    assert "process 0 holds" in errs[1]
    assert not (tmp_path / "checkpoints").exists()


# ----------------------------------------------------------------------------- config values
@pytest.mark.parametrize("value", ["0", "-8"])
def test_non_positive_batch_size_names_the_key(tmp_path, value):
    out = run_main(tmp_path / "wd", *TINY_RGB, f"--config.batch_size={value}", timeout=120)
    assert out.returncode == 1
    one_line_error(out.stderr)
    assert f"config.batch_size={value}: must be a positive whole number" in out.stderr
    assert not (tmp_path / "wd").exists()  # refused before anything was made


def test_every_count_and_size_is_checked_by_key():
    cfg = members.load_config_file(str(REPO / "configs" / "distill.py"), "tiny")
    validate.check(cfg)  # the shipped preset passes
    checked = 0
    for key in validate.RANGES:
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if node.get(leaf) is None:
            continue  # a field of another architecture
        old, node[leaf] = node[leaf], -1
        with pytest.raises(validate.ConfigError,
                           match=re.escape(f"config.{key}=") + r"-1(\.0)?: must be"):
            validate.check(cfg)
        node[leaf] = old
        checked += 1
    assert checked >= 35


# --------------------------------------------------------------------------- short videos
def test_predict_warns_on_short_and_truncated_videos(tmp_path):
    from fixtures_ssv2 import footage

    workdir = fx.trained_rgb_workdir()
    one = fx.write_mp4(str(tmp_path / "one_frame.mp4"), np.zeros((1, 32, 32, 3), np.uint8))
    tree = footage("tree.avi")  # 68 frames over 29.6 s; skips with the install hint if absent
    cut = tmp_path / "tree_truncated.avi"
    data = open(tree, "rb").read()
    cut.write_bytes(data[:int(len(data) * 0.4)])
    out = subprocess.run([sys.executable, "-m", "mmkd_jax.predict", f"--workdir={workdir}",
                          "--json", one, str(cut), tree], cwd=REPO, capture_output=True,
                         text=True, env=env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]  # all still classified
    results = {Path(r["path"]).name: r for r in json.loads(out.stdout)["results"]}
    needed = json.load(open(os.path.join(workdir, "config.json")))["data"]["num_frames"]
    assert results["one_frame.mp4"]["warnings"] == [
        f"1 frames found, the model samples {needed}: frames are repeated"]
    n = results["tree_truncated.avi"]["num_frames"]
    assert 0 < n < 68 and results["tree_truncated.avi"]["top"]
    warning = results["tree_truncated.avi"]["warnings"][0]
    assert warning.startswith(f"the {n} decoded frames cover ") and warning.endswith(
        "of the 29.6 s the file declares (truncated or damaged file)")
    assert results["tree.avi"]["warnings"] == []  # the intact file: nothing to say
    assert f"warning: {one}: 1 frames found" in out.stderr
    assert f"warning: {cut}: {warning}" in out.stderr
    assert tree not in out.stderr


# ------------------------------------------------------------------------ kill -9 and resume
def test_kill_9_then_resume_keeps_the_whole_history(tmp_path):
    flags = [*TINY_RGB, "--config.total_steps=140", "--config.eval_every_epochs=1"]
    proc = start_main(tmp_path, *flags)  # 7 steps an epoch: evals (and saves) at 7, 14, ...
    wait_for(lambda: (tmp_path / "checkpoints" / "14").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (tmp_path / "results.json").exists()
    before = {json.loads(r)["step"]: json.loads(r)["eval/top1"]
              for r in open(tmp_path / "metrics.jsonl") if "eval/top1" in r}
    assert (tmp_path / workdir_lock.LOCK_FILE).exists()  # left behind by the killed run

    out = run_main(tmp_path, *flags)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Taking over the stale lock" in out.stderr
    resumed = int(out.stderr.split("from its own checkpoint at step ")[1].split()[0])
    assert 14 <= resumed < 140
    results = json.load(open(tmp_path / "results.json"))
    history = results["history"]
    assert [h["step"] for h in history] == list(range(7, 141, 7))
    for h in history:
        if h["step"] <= resumed:
            assert h["top1"] == before[h["step"]]  # the evals from before the kill
    segments = results["train_segments"]
    assert [(g["start_step"], g["end_step"]) for g in segments] == [(0, resumed),
                                                                     (resumed, 140)]
    assert results["train_time_s"] == pytest.approx(sum(g["seconds"] for g in segments))
    assert all(g["seconds"] > 0 for g in segments)


# ------------------------------------------------------------------------------ STLT converter
@pytest.mark.torch
def test_stlt_converter_refuses_action_genome_checkpoints():
    torch = pytest.importorskip("torch", reason="needs torch for the reference STLT")
    from test_stlt import _reference_stlt

    from mmkd_jax.convert import stlt_from_torch

    state = _reference_stlt(torch, d=32, heads=4, spatial=1, temporal=1, classes=5,
                            positions=9).state_dict()
    key = ("backbone.frames_embeddings.layout_embedding.category_box_embeddings."
           "category_embeddings.weight")
    state[key] = torch.randn(38, 32)  # one embedding per Action Genome object class
    with pytest.raises(ValueError, match="38 box-category embeddings.*cannot be represented"):
        stlt_from_torch(state, num_heads=4, num_frames=4)
