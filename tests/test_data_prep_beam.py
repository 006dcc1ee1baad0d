"""The Beam path of a build gives the pool path's dataset: same splits, examples, feature bytes,
build-report counts.

Each fixture is built twice: with TFDS's own `tfds build` entry point on Beam's DirectRunner at
2 worker processes, and with `python -m data_prep build` (the process pool). Needs the [beam]
extra (`pip install -e ".[beam]"`) and real footage (opencv-doc); skips with the reason without.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("apache_beam", reason="the Beam build needs `pip install -e \".[beam]\"`")
import tensorflow as tf  # noqa: E402
from etils import epath  # noqa: E402
from fixtures_ssv2 import footage, make_manual_dir  # noqa: E402
from test_video_folder import make_video_list  # noqa: E402

from data_prep import builders  # noqa: E402
from data_prep.__main__ import _parse as parse_build_command  # noqa: E402
from data_prep.report import REPORT_NAME  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAM_OPTIONS = ("--beam_pipeline_options=runner=DirectRunner,direct_num_workers=2,"
                "direct_running_mode=multi_processing")


def tfds_cli() -> list[str]:
    """The installed `tfds` console script (the official CLI), next to this Python."""
    script = os.path.join(os.path.dirname(sys.executable), "tfds")
    return [script] if os.path.exists(script) else [shutil.which("tfds") or "tfds"]


def build_both(dataset: str, manual_dir: str, root: str, flags: tuple = ()
               ) -> tuple[str, str, str]:
    """-> (pool build dir, beam build dir, the Beam build's log) of `dataset`."""
    folder = os.path.join(builders.DATA_PREP_DIR, dataset)
    parse_build_command(["python -m data_prep", "build", folder, f"--manual_dir={manual_dir}",
                         f"--data_dir={root}/pool", *flags]).execute()
    env = dict(os.environ, PYTHONPATH=REPO, MMKD_DATA_WORKERS="1")
    run = subprocess.run(
        [*tfds_cli(), "build", folder, f"--manual_dir={manual_dir}", f"--data_dir={root}/beam",
         BEAM_OPTIONS, *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:]
    (pool,) = glob.glob(f"{root}/pool/*/*/*/")
    (beam,) = glob.glob(f"{root}/beam/*/*/*/")
    return pool, beam, run.stdout


def examples(build_dir: str) -> dict:
    """(split, video id) -> {feature name: serialised feature bytes}, from the TFRecord shards."""
    out = {}
    for shard in sorted(glob.glob(os.path.join(build_dir, "*.tfrecord-*"))):
        split = os.path.basename(shard).split("-")[1].split(".")[0]
        for raw in tf.data.TFRecordDataset(shard).as_numpy_iterator():
            feats = tf.train.Example.FromString(raw).features.feature
            key = (split, feats["video_id"].bytes_list.value[0].decode())
            assert key not in out, f"{key} written twice in {build_dir}"
            out[key] = {name: f.SerializeToString() for name, f in feats.items()}
    return out


def assert_same_dataset(pool: str, beam: str) -> dict:
    a, b = examples(pool), examples(beam)
    assert sorted(a) == sorted(b)
    for key in a:
        assert sorted(a[key]) == sorted(b[key]), key
        for name in a[key]:
            assert a[key][name] == b[key][name], f"{key}: feature {name} differs"
    splits = [{s["name"]: int(s.get("numExamples") or sum(int(n) for n in s["shardLengths"]))
               for s in json.load(open(os.path.join(d, "dataset_info.json")))["splits"]}
              for d in (pool, beam)]
    assert splits[0] == splits[1]
    reports = [json.load(open(os.path.join(d, REPORT_NAME))) for d in (pool, beam)]
    for field in ("written", "problems", "reasons"):
        assert reports[0][field] == reports[1][field], field
    return reports[1]


def worker_problem_counts(report: dict) -> dict:
    """Problems found in workers (not while reading the split files) per the Beam counters."""
    return {k.split(":", 1)[1]: v for k, v in report["info"]["beam_counters"].items()
            if k.startswith("problem:")}


@pytest.mark.parametrize("dataset", ["something_something_v2", "something_else"])
def test_beam_build_equals_pool_build_ssv2(dataset, tmp_path):
    footage("tree.avi"), footage("vtest.avi")
    manual = make_manual_dir(str(tmp_path))
    pool, beam, log = build_both(dataset, manual, str(tmp_path))
    report = assert_same_dataset(pool, beam)
    assert report["problems"], "the fixture has bad inputs: the report cannot be empty"
    counters = report["info"]["beam_counters"]
    assert counters["videos"] == counters["written"] + report["problems"].get(
        "video_unreadable", 0)
    for reason, n in worker_problem_counts(report).items():
        assert report["problems"][reason] >= n
    assert not os.path.exists(os.path.join(beam, "_beam")), "Beam work files left in the dataset"
    videos = counters["videos"]
    assert f"(beam): {videos}/{videos} videos done in" in log, log[-3000:]


def test_progress_line_has_rate_and_eta(tmp_path, caplog):
    from data_prep.beam_build import Progress

    caplog.set_level("INFO")
    progress = Progress("demo", epath.Path(tmp_path), poll_s=0.05)
    progress.total = 100
    for done in (10, 30, 50):  # two workers' progress files, rewritten as they go
        (tmp_path / "worker_a").write_text(str(done))
        (tmp_path / "worker_b").write_text(str(done // 2))
        time.sleep(0.3)
    progress.stop()
    lines = [r.getMessage() for r in caplog.records if "(beam)" in r.getMessage()]
    assert any("videos/s, ETA " in line and " min" in line for line in lines), lines
    assert lines[-1].startswith("demo (beam): 75/100 videos done in"), lines


def test_beam_build_equals_pool_build_video_folder(tmp_path):
    manual = str(tmp_path / "manual")
    make_video_list(manual)
    pool, beam, _ = build_both("video_folder", manual, str(tmp_path), ("--config=clips",))
    report = assert_same_dataset(pool, beam)
    assert report["written"] == {"train": 2, "validation": 2, "test": 1}
