"""A custom dataset from a CSV of real-footage clips, built, trained on and predicted through the
normal commands (`python -m data_prep build`, `python -m mmkd_jax.main`).

The clips are cut from Debian opencv-doc's tree.avi / vtest.avi (tests/fixtures_ssv2.py) and
written as VP9 webm, MPEG-4 avi and a folder of JPEG frames, with one case of each kind of bad
row (missing file, unknown label, duplicate, bad released flow, boxes of an unknown video).
"""
import json
import os
import subprocess
import sys
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from fixtures_ssv2 import footage, read_frames, write_json, write_webm

from data_prep import video_list
from data_prep.__main__ import _parse as parse_build_command
from data_prep.report import REPORT_NAME, DatasetFileError
from mmkd_jax import checkpoint_meta
from mmkd_jax.data import records
from mmkd_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "video_folder/clips"
SIZE = (160, 120)  # (W, H) of the clips
LABELS = ["walk", "tree"]  # labels.txt order, not alphabetical
CSV = """video,label,split,id,flow
clips/tree_a.webm,tree,train,,
clips/walk_a.avi,walk,train,,released/walk_a
frames/walk_b,walk,validation,,
clips/tree_c.webm,tree,validation,,released/tree_c
clips/unlabelled.webm,,test,,
clips/gone.webm,tree,train,,
clips/tree_a.webm,jump,train,jumping,
clips/tree_a.webm,tree,validation,,
"""
# split -> {video id: (label, frames)}
EXPECTED = {"train": {"clips/tree_a": (1, 12), "clips/walk_a": (0, 12)},
            "validation": {"frames/walk_b": (0, 10), "clips/tree_c": (1, 10)},
            "test": {"clips/unlabelled": (-1, 8)}}
PROBLEMS = {"video_missing": 1, "unknown_template": 1, "duplicate_video": 1,
            "flow_frame_count_mismatch": 1, "boxes_unknown_video": 1, "boxes_missing": 4,
            "box_out_of_frame": 1}


def write_avi(path: str, frames: np.ndarray, fps: int = 12) -> None:
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_video_list(root: str) -> str:
    tree, vtest = footage("tree.avi"), footage("vtest.avi")
    clips, frames = os.path.join(root, "clips"), os.path.join(root, "frames", "walk_b")
    os.makedirs(clips)
    os.makedirs(frames)
    write_webm(os.path.join(clips, "tree_a.webm"), read_frames(tree, 0, 12, SIZE))
    write_avi(os.path.join(clips, "walk_a.avi"), read_frames(vtest, 0, 12, SIZE))
    write_webm(os.path.join(clips, "tree_c.webm"), read_frames(tree, 30, 10, SIZE))
    write_webm(os.path.join(clips, "unlabelled.webm"), read_frames(tree, 50, 8, SIZE))
    for i, f in enumerate(read_frames(vtest, 200, 10, (SIZE[1], SIZE[0])), 1):  # portrait
        cv2.imwrite(os.path.join(frames, f"{i:03d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    # Released TSN flow: complete for walk_a (stored as given), 3 frames short for tree_c.
    for vid, count in (("walk_a", 11), ("tree_c", 6)):
        d = os.path.join(root, "released", vid)
        os.makedirs(d)
        for i in range(1, count + 1):
            for axis, value in (("x", 100 + i), ("y", 150 - i)):
                cv2.imwrite(os.path.join(d, f"flow_{axis}_{i:05d}.jpg"),
                            np.full((SIZE[1], SIZE[0]), value, np.uint8))
    box = lambda x1, y1, x2, y2: {"box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                                  "category": "hand", "standard_category": "hand"}
    write_json(os.path.join(root, "bounding_box_smthsmth_part1.json"), {
        "clips/tree_a": [{"name": "tree_a/0001.jpg", "labels": [box(16, 12, 80, 60),
                                                                 box(120, 90, 200, 130)]}],
        "ghost": [{"name": "ghost/0001.jpg", "labels": [box(1, 1, 5, 5)]}]})
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    with open(os.path.join(root, "videos.csv"), "w") as f:
        f.write(CSV)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    footage("tree.avi"), footage("vtest.avi")  # skip early, with the reason, if missing
    root = tmp_path_factory.mktemp("custom")
    manual = make_video_list(str(root / "my_videos"))
    data_dir = str(root / "tfds")
    argv = ["python -m data_prep", "build", os.path.join(REPO, "data_prep", "video_folder"),
            "--config=clips", f"--manual_dir={manual}", f"--data_dir={data_dir}"]
    parse_build_command(argv).execute()
    return manual, data_dir


def test_video_list_parsing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "list.csv").write_text("path;label\na/x.mp4;10\na/y.mp4;9\n/abs/z.mp4;10\n")
    entries = video_list.load_video_list(str(tmp_path / "list.csv"))
    assert [(e.video_id, e.split, e.label) for e in entries] == [
        ("a/x", "train", "10"), ("a/y", "train", "9"), ("z", "train", "10")]
    assert entries[0].video_path == str(tmp_path / "a" / "x.mp4")
    names, label_file = video_list.load_labels(str(tmp_path / "list.csv"), entries)
    assert names == ["9", "10"] and label_file is None  # integers sort as numbers
    write_json(str(tmp_path / "j" / "videos.json"), [
        {"video": "v1", "label": "b", "split": "validation", "id": "one"},
        {"video": "v2.webm", "label": "a"}])
    assert video_list.find_list_file("", str(tmp_path / "j")).endswith("videos.json")
    entries = video_list.load_video_list(str(tmp_path / "j" / "videos.json"))
    assert [(e.video_id, e.split) for e in entries] == [("one", "validation"), ("v2", "train")]
    assert video_list.load_labels(str(tmp_path / "j" / "videos.json"), entries)[0] == ["a", "b"]
    for text, message in (("label\nx\n", "no 'video' column"), ("video\nx\n", "no 'label'"),
                          ("video,label,split\nx,a,my split\n", "is not a name"), ("", "empty")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(DatasetFileError, match=message):
            video_list.load_video_list(str(tmp_path / "bad.csv"))
    with pytest.raises(DatasetFileError, match="videos.csv or videos.json"):
        video_list.find_list_file("", str(tmp_path / "a"))


def test_records_labels_and_report(built):
    manual, data_dir = built
    builder = records.load_builder(NAME, data_dir)
    assert records.label_names(builder) == LABELS
    assert builder.info.metadata["source_files"]["labels"] == os.path.join(manual, "labels.txt")
    assert builder.info.metadata["flow_sources"] == {"computed:dis": 4, "released": 1}
    for split, videos in EXPECTED.items():
        ds = builder.as_dataset(split=split, shuffle_files=False)
        got = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(ds)}
        assert sorted(got) == sorted(videos)
        for vid, (label, n) in videos.items():
            ex = got[vid]
            h, w = (SIZE[0], SIZE[1]) if vid == "frames/walk_b" else (SIZE[1], SIZE[0])
            assert ex["label"] == label
            assert ex["template"].decode() == (LABELS[label] if label >= 0 else "")
            assert ex["frames"].shape == (n, h, w, 3)
            assert ex["flow_x"].shape == (n - 1, h, w, 1)
            np.testing.assert_array_equal(ex["frame_size"], [h, w])
            if vid == "clips/walk_a":  # released flow stored as given: value 100 + i
                np.testing.assert_allclose(ex["flow_x"][:, 0, 0, 0], 101 + np.arange(n - 1),
                                           atol=1)
            if vid == "clips/tree_a":  # frame 1: one box inside, one clipped at the border
                assert ex["num_boxes"].tolist() == [2] + [0] * (n - 1)
                np.testing.assert_allclose(ex["boxes"][0, :2], [[0.1, 0.1, 0.5, 0.5],
                                                                [0.75, 0.75, 1.0, 1.0]])
                assert ex["box_categories"][0, :2].tolist() == [1, 1]
    report = json.load(open(os.path.join(os.fspath(builder.data_path), REPORT_NAME)))
    assert report["problems"] == PROBLEMS
    assert report["written"] == {"train": 2, "validation": 2, "test": 1}
    assert list(report["reasons"]["unknown_template"]["videos"]) == ["jumping"]


def run_main(workdir, *flags):
    out = subprocess.run([sys.executable, "-m", "mmkd_jax.main", f"--workdir={workdir}",
                          *flags], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out


def test_train_evaluate_and_predict_through_the_normal_command(built, tmp_path):
    _, data_dir = built
    data = ["--config=configs/baseline_rgb.py:tiny", f"--config.data.name={NAME}",
            f"--config.data.data_dir={data_dir}", "--config.batch_size=2"]
    out = run_main(tmp_path, *data, "--config.total_steps=2", "--config.eval.num_clips=2",
                   "--config.eval.num_crops=3")
    results = json.load(open(tmp_path / "results.json"))
    assert results["dataset"] == NAME and results["final"]["num_examples"] == 2
    assert results["eval"] == {"num_clips": 2, "num_crops": 3, "num_views": 6,
                               "description": results["protocol"]}
    assert "logits averaged over 6 views" in results["protocol"]
    assert f"Eval ({results['protocol']})" in out.stdout  # printed with the result
    assert json.load(open(tmp_path / "config.json"))["model"]["num_classes"] == 2
    ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
    meta = ckpt.restore_meta(ckpt.latest_step())
    assert checkpoint_meta.missing_fields(meta) == []
    assert meta["label_names"] == LABELS
    assert meta["preprocessing"]["eval_views"] == {"num_clips": 2, "num_crops": 3}

    run_main(tmp_path, *data, "--config.mode=predict", "--config.analysis.split=validation")
    rows = [json.loads(line) for line in open(tmp_path / "predictions_validation.jsonl")]
    want = EXPECTED["validation"]
    assert sorted(r["video_id"] for r in rows) == sorted(want)
    for r in rows:
        assert r["label"] == want[r["video_id"]][0]
        assert r["label_name"] == LABELS[r["label"]]
        assert len(r["logits"]) == 2 and [t["label"] for t in r["top"]] != []
        assert sum(t["probability"] for t in r["top"]) == pytest.approx(1.0, abs=1e-6)
    feats = np.load(tmp_path / "features_validation.npz")
    assert feats["features"].shape == (2, 32) and feats["video_ids"].tolist() == [
        r["video_id"] for r in rows]
