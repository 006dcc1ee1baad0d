"""something_synthetic: tiny builds, the compositional split property, determinism, configs."""
import dataclasses
import glob
import hashlib
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import builders, parallel
from data_prep.something_synthetic import something_synthetic_dataset_builder as ssb
from data_prep.synthetic import actions as act
from data_prep.synthetic.generate import ClipJob, make_record
from data_prep.synthetic.knobs import Knobs
from data_prep.synthetic.preview import preview_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic"))


def records(builder, split, raw=False) -> list[dict]:
    skip = tfds.decode.SkipDecoding()
    decoders = {"frames": skip, "flow_x": skip, "flow_y": skip} if raw else None
    ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    return list(tfds.as_numpy(ds))


def job_for(config, video_id: str) -> ClipJob:
    """The generator job behind a record (video ids number clips over train then validation)."""
    index = int(video_id.removeprefix("syn_"))
    split, i = ("train", index) if index < config.num_train else (
        "validation", index - config.num_train)
    return ClipJob(config.kind, split, i, index, config.seed, config.frame_size,
                   config.num_frames, config.flow_method, config.render_knobs)


def object_set_from_pixels(frames: np.ndarray, boxes: np.ndarray, num_boxes: np.ndarray,
                           categories: np.ndarray) -> str:
    """Nearest palette colour of the acted-on object's centre pixels -> its object set."""
    t = int(np.argmax(num_boxes > 0))
    k = int(np.argmax(categories[t] == 2))  # "object 0" comes first
    h, w = frames.shape[1:3]
    x1, y1, x2, y2 = boxes[t, k] * [w, h, w, h]
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 6, (y2 - y1) / 6
    patch = frames[t, int(cy - ry):int(cy + ry) + 1, int(cx - rx):int(cx + rx) + 1]
    pixels = patch.reshape(-1, 3).astype(float)
    votes = {"A": 0, "B": 0}
    for p in pixels:
        dists = {name: min(np.linalg.norm(p - np.array(c) * s) for c in oset.colours
                           for s in (1.0, 0.5))
                 for name, oset in act.OBJECT_SETS.items()}
        votes[min(dists, key=dists.get)] += 1
    return max(votes, key=votes.get)


def test_tiny_standard_build(data_dir):
    start = time.perf_counter()
    builder = builders.load("something_synthetic/standard_tiny", data_dir)
    build_s = time.perf_counter() - start
    assert build_s < 60, f"tiny build took {build_s:.1f} s"
    info = builder.info
    assert info.metadata["label_names"] == list(act.LABEL_NAMES)
    assert info.splits["train"].num_examples == 56 and info.splits["validation"].num_examples == 28
    stats = info.metadata["statistics"]
    assert stats["train"]["per_class"] == [4] * act.NUM_CLASSES
    assert stats["train"]["group_object_set"] == {"1A": 14, "1B": 14, "2A": 14, "2B": 14}
    assert stats["validation"]["group_object_set"] == {"1A": 7, "1B": 7, "2A": 7, "2B": 7}
    ex = records(builder, "train")[0]
    assert ex["frames"].shape == (16, 48, 48, 3)
    assert ex["flow_x"].shape == ex["flow_y"].shape == (15, 48, 48, 1)
    assert ex["boxes"].shape == (16, 8, 4) and ex["box_categories"].max() <= 2
    assert set(np.unique(ex["box_categories"])) >= {1, 2}  # hand and object present
    assert ((ex["boxes"] >= 0) & (ex["boxes"] <= 1)).all()
    np.testing.assert_array_equal(ex["frame_size"], [48, 48])
    assert os.path.isfile(os.path.join(builder.data_dir, "build_report.json"))


def test_compositional_split_property(data_dir):
    builder = builders.load("something_synthetic/compositional_tiny", data_dir)
    config = builder.builder_config
    pairs = {}
    agree = total = 0
    for split in ("train", "validation"):
        pairs[split] = set()
        for ex in records(builder, split):
            group = act.GROUPS[ex["label"]]
            _, stats, _ = make_record(job_for(config, ex["video_id"].decode()))
            assert stats["label"] == ex["label"]
            pairs[split].add((group, stats["object_set"]))
            assert stats["look"] in (stats["object_set"], "shared")
            if stats["look"] == "shared":  # drawn from both palettes on purpose
                continue
            seen = object_set_from_pixels(ex["frames"], ex["boxes"], ex["num_boxes"],
                                          ex["box_categories"])
            agree += seen == stats["object_set"]
            total += 1
    assert pairs["train"] == {(1, "A"), (2, "B")}
    assert pairs["validation"] == {(1, "B"), (2, "A")}
    assert not pairs["train"] & pairs["validation"]
    assert total >= 30 and agree / total >= 0.9, f"object colour matches its set {agree}/{total}"
    assert builder.info.metadata["group_object_sets"] == {
        "train": {"1": "A", "2": "B"}, "validation": {"1": "B", "2": "A"}}
    # every class is still seen in both splits, only with the other object set
    labels = {s: {int(ex["label"]) for ex in records(builder, s)} for s in pairs}
    assert labels["train"] == labels["validation"] == set(range(act.NUM_CLASSES))


def test_records_are_a_function_of_the_seed(data_dir):
    builder = builders.load("something_synthetic/standard_tiny", data_dir)
    config = builder.builder_config
    stored = {ex["video_id"].decode(): ex for ex in records(builder, "train", raw=True)}
    for vid in ("syn_000000", "syn_000013", "syn_000041"):
        example, _, _ = make_record(job_for(config, vid))
        for key in ("frames", "flow_x", "flow_y"):
            assert list(stored[vid][key]) == example[key], (vid, key)
        np.testing.assert_array_equal(stored[vid]["boxes"], example["boxes"])
    other = make_record(dataclasses.replace(job_for(config, "syn_000000"), seed=1))[0]
    assert other["frames"] != list(stored["syn_000000"]["frames"])


def test_rebuild_is_byte_identical(data_dir, tmp_path):
    first = builders.load("something_synthetic/standard_tiny", data_dir)
    second = builders.load("something_synthetic/standard_tiny", str(tmp_path))

    def digests(builder):
        files = sorted(glob.glob(os.path.join(builder.data_dir, "*.tfrecord*")))
        return [hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files]

    assert len(digests(first)) == 2 and digests(first) == digests(second)


def test_worker_pool_gives_the_same_records():
    jobs = [ClipJob("compositional", "train", i, i, 5, 32, 6, "farneback", Knobs())
            for i in range(4)]
    serial = [make_record(j)[0] for j in jobs]
    pooled = [r[0] for r in parallel.ordered_map(make_record, jobs, num_workers=2, min_items=1)]
    for a, b in zip(serial, pooled):
        assert a["frames"] == b["frames"] and a["flow_x"] == b["flow_x"]
        np.testing.assert_array_equal(a["boxes"], b["boxes"])


def test_config_names_encode_what_changes_the_data(data_dir):
    cfg = ssb.config_from_name("compositional_n28_v14_s3_px32_t8")
    assert (cfg.kind, cfg.num_train, cfg.num_validation, cfg.seed, cfg.frame_size,
            cfg.num_frames, cfg.flow_method) == ("compositional", 28, 14, 3, 32, 8, "farneback")
    assert ssb.encode_name(cfg) == "compositional_n28_v14_s3_px32_t8"
    assert ssb.SyntheticConfig(kind="standard", flow_method="dis").name == (
        "standard_n3500_v1050_s0_px48_t16_dis")
    noisy = ssb.SyntheticConfig(kind="standard", knobs={"pixel_noise": 10.0})
    assert noisy.name.startswith("standard_n3500_v1050_s0_px48_t16_k") and len(noisy.name) == 42
    assert ssb.config_from_name("standard_tiny_x") is None
    with pytest.raises(ValueError, match="kind"):
        ssb.SyntheticConfig(kind="fewshot")
    with pytest.raises(ValueError, match="unknown synthetic knobs"):
        ssb.SyntheticConfig(knobs={"colour": 1})
    dirs = {builders.make_builder(f"something_synthetic/{n}", data_dir).data_dir
            for n in ("standard", "standard_tiny", "standard_n56_v28_s0_px48_t16",
                      "standard_n56_v28_s1_px48_t16")}
    assert len(dirs) == 4


def test_custom_size_builds_under_its_own_name(data_dir):
    builder = builders.load("something_synthetic/standard_n14_v14_s2_px32_t8", data_dir)
    assert builder.data_dir.endswith(os.path.join("standard_n14_v14_s2_px32_t8", "1.0.0"))
    ex = records(builder, "validation")[0]
    assert ex["frames"].shape == (8, 32, 32, 3) and ex["flow_x"].shape == (7, 32, 32, 1)
    custom = ssb.SyntheticConfig(kind="standard", num_train=14, num_validation=14,
                                 frame_size=32, num_frames=8, knobs={"distractors": [0, 0]})
    assert builders.load_synthetic(custom, data_dir).info.splits["train"].num_examples == 14
    assert builders.load_synthetic(custom, data_dir).info.metadata["knobs"]["distractors"] == [0, 0]
    # Once built, a knobs config loads by its name (what `--config.data.name=` passes), though
    # the name alone (`..._k<digest>`) cannot describe the knobs to build it.
    by_name = builders.load(f"something_synthetic/{custom.name}", data_dir)
    assert by_name.info.metadata["knobs"]["distractors"] == [0, 0]
    assert by_name.info.splits["train"].num_examples == 14
    with pytest.raises(ValueError):
        builders.load("something_synthetic/standard_n14_v14_s0_px32_t8_k00000000", data_dir)


def test_build_command_line_runs(tmp_path):
    """`python -m data_prep build data_prep/something_synthetic --config=...` end to end."""
    command = builders.build_command("something_synthetic/standard_n14_v14_s0_px32_t8",
                                     str(tmp_path))
    assert "--config=standard_n14_v14_s0_px32_t8" in command and "--manual_dir" not in command
    argv = [sys.executable, "-m", "data_prep", "build",
            os.path.join(ROOT, "data_prep", "something_synthetic"),
            "--config=standard_n14_v14_s0_px32_t8", f"--data_dir={tmp_path}"]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("something_synthetic/standard_n14_v14_s0_px32_t8: wrote 28 examples "
            "(train 14, validation 14); 0 problems") in out.stderr
    built = tfds.builder_from_directory(
        str(tmp_path / "something_synthetic" / "standard_n14_v14_s0_px32_t8" / "1.0.0"))
    assert built.info.splits["validation"].num_examples == 14


def test_preview_grid(tmp_path):
    path = str(tmp_path / "grid.png")
    grid = preview_grid(path, kind="compositional", split="validation", num_clips=3,
                        frame_size=32, num_frames=8, num_shown=2, scale=2)
    img = cv2.imread(path)
    assert img.shape == grid.shape == (3 * (14 + 64 + 4), 4 * (64 + 4), 3)
    assert grid.std() > 20  # frames, boxes and flow were drawn, not a blank canvas


@pytest.mark.slow
def test_default_size_builds_in_under_two_minutes(tmp_path):
    start = time.perf_counter()
    builder = builders.load("something_synthetic/compositional", str(tmp_path))
    seconds = time.perf_counter() - start
    assert builder.info.splits["train"].num_examples == 3500
    assert seconds < 120, f"default build took {seconds:.0f} s"
