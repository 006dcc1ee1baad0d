"""SSv2 and Something-Else builders on real footage, built through the `tfds build` command.

The fixture (tests/fixtures_ssv2.py) re-encodes opencv-doc clips to VP9 webm at 12 fps and
writes label, split, box and flow files with one case of each kind of bad input; the builds run
TFDS's `build` command in-process through `python -m data_prep build`'s parser (the `tfds`
entry point itself needs apache_beam, see data_prep/__main__.py).
"""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from fixtures_ssv2 import EXPECTED, LABELS, SE_LABELS, footage, make_manual_dir

from data_prep import builders
from data_prep.__main__ import _parse as parse_build_command
from data_prep.report import REPORT_NAME, DatasetFileError
from mmkd_jax.data.flow import decode_tsn


def run_build_cli(dataset: str, manual_dir: str, data_dir: str) -> None:
    argv = ["python -m data_prep", "build", os.path.join(builders.DATA_PREP_DIR, dataset),
            f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"]
    parse_build_command(argv).execute()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    footage("tree.avi"), footage("vtest.avi")  # skip early, with the reason, if missing
    root = tmp_path_factory.mktemp("ssv2")
    manual = make_manual_dir(str(root))
    data_dir = str(root / "tfds")
    for dataset in ("something_something_v2", "something_else"):
        run_build_cli(dataset, manual, data_dir)
    return manual, data_dir


def read_split(builder, split, raw=False) -> dict[str, dict]:
    decoders = None
    if raw:  # the stored JPEG bytes, undecoded
        skip = tfds.decode.SkipDecoding()
        decoders = {"frames": skip, "flow_x": skip, "flow_y": skip}
    ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    return {ex["video_id"].decode(): ex for ex in tfds.as_numpy(ds)}


def test_ssv2_records(built):
    _, data_dir = built
    builder = builders.load("something_something_v2", data_dir)
    assert builder.info.metadata["label_names"] == list(LABELS)
    assert builder.info.metadata["flow_sources"] == {"computed:dis": 4, "released": 1}
    for split, videos in EXPECTED["ssv2_splits"].items():
        records = read_split(builder, split)
        assert sorted(records) == sorted(videos)
        for vid, (label, n) in videos.items():
            ex = records[vid]
            assert ex["label"] == label
            assert ex["template"].decode() == list(LABELS)[label]
            assert ex["frames"].shape == (n, 240, 320, 3)
            assert ex["flow_x"].shape == ex["flow_y"].shape == (n - 1, 240, 320, 1)
            assert ex["boxes"].shape == (n, 8, 4) and ex["num_boxes"].shape == (n,)
            np.testing.assert_array_equal(ex["frame_size"], [240, 320])


def test_ssv2_boxes_normalised_and_clipped(built):
    records = read_split(builders.load("something_something_v2", built[1]), "train")
    ex = records["101"]
    for t, expected in EXPECTED["boxes_101"].items():
        assert ex["num_boxes"][t] == len(expected), t
        for k, (category, box) in enumerate(expected):
            assert ex["box_categories"][t, k] == category
            np.testing.assert_allclose(ex["boxes"][t, k], box, atol=1e-6)
        assert not ex["boxes"][t, len(expected):].any()
    assert ex["num_boxes"][5:].sum() == 0  # frame 99 was out of range, nothing else annotated
    assert records["102"]["num_boxes"].sum() == 0  # no boxes for 102: empty, kept


def test_ssv2_flow_values(built):
    builder = builders.load("something_something_v2", built[1])
    train = read_split(builder, "train")
    # Computed flow of real footage: TSN bytes decode to small, mostly-static motion.
    for vid in ("101", "108"):
        v = decode_tsn(np.concatenate([train[vid]["flow_x"], train[vid]["flow_y"]], -1))
        assert np.abs(np.median(v)) < 0.2  # the camera is still
        assert 0.1 < np.abs(v).max() <= 20.0
        assert np.abs(v).mean() < 1.0
    # 103 had 10 released flow frames for 16 RGB frames: recomputed, so not the constant files.
    val = read_split(builder, "validation")["103"]
    assert val["flow_x"].shape[0] == 15 and len(np.unique(val["flow_x"])) > 5


def test_ssv2_jpeg_sources_stored_as_given(built):
    manual, data_dir = built
    raw = read_split(builders.load("something_something_v2", data_dir), "train", raw=True)
    flow_dir = os.path.join(manual, "flow", "102")
    for axis in ("x", "y"):
        files = [os.path.join(flow_dir, f"flow_{axis}_{i:05d}.jpg") for i in range(1, 20)]
        assert list(raw["102"][f"flow_{axis}"]) == [open(f, "rb").read() for f in files]
    frames_dir = os.path.join(manual, "20bn-something-something-v2", "108")
    files = [os.path.join(frames_dir, f"{i:04d}.jpg") for i in range(1, 13)]
    assert list(raw["108"]["frames"]) == [open(f, "rb").read() for f in files]
    # and the released flow decodes to the values that were written (100 + i / 150 - i)
    train = read_split(builders.load("something_something_v2", data_dir), "train")
    np.testing.assert_allclose(train["102"]["flow_x"][:, 100, 100, 0], 101 + np.arange(19),
                               atol=1)


def test_ssv2_build_report(built):
    builder = builders.load("something_something_v2", built[1])
    with open(os.path.join(builder.data_dir, REPORT_NAME)) as f:
        report = json.load(f)
    assert report["problems"] == EXPECTED["ssv2_problems"]
    assert report["written"] == {"train": 3, "validation": 1, "test": 1}
    reasons = report["reasons"]
    assert list(reasons["video_missing"]["videos"]) == ["104"]
    assert list(reasons["video_unreadable"]["videos"]) == ["105"]
    assert "105.webm" in reasons["video_unreadable"]["videos"]["105"]["details"][0]
    assert list(reasons["unknown_template"]["videos"]) == ["106"]
    assert list(reasons["boxes_unknown_video"]["videos"]) == ["999"]
    assert list(reasons["flow_frame_count_mismatch"]["videos"]) == ["103"]
    assert sorted(reasons["boxes_missing"]["videos"]) == ["102", "105", "107", "108"]
    assert "recomputed" in reasons["flow_frame_count_mismatch"]["action"]


def test_something_else_records(built):
    _, data_dir = built
    builder = builders.load("something_else", data_dir)
    assert builder.info.metadata["label_names"] == list(SE_LABELS)
    for split, videos in EXPECTED["se_splits"].items():
        records = read_split(builder, split)
        assert sorted(records) == sorted(videos)
        for vid, (label, n) in videos.items():
            assert records[vid]["label"] == label
            assert records[vid]["template"].decode() == list(SE_LABELS)[label]
            assert records[vid]["frames"].shape[0] == n
    with open(os.path.join(builder.data_dir, REPORT_NAME)) as f:
        assert json.load(f)["problems"] == {"flow_frame_count_mismatch": 1,
                                            "boxes_unknown_video": 1, "boxes_missing": 1,
                                            "box_inverted": 1, "box_out_of_frame": 1,
                                            "box_malformed": 1, "box_frame_out_of_range": 1}


def test_missing_real_dataset_raises_with_build_command(tmp_path):
    data_dir = str(tmp_path / "empty")
    for name in ("something_something_v2", "something_else", "something_something_v2/tvl1"):
        with pytest.raises(FileNotFoundError) as e:
            builders.load(name, data_dir)
        command = builders.build_command(name, data_dir)
        assert str(e.value) == command
        dataset = name.split("/")[0]
        assert f"build {os.path.join(builders.DATA_PREP_DIR, dataset)} " in command
        assert f"--manual_dir={data_dir}/downloads/manual" in command
        assert command.endswith(f"--data_dir={data_dir}")
    assert "--config=tvl1 " in builders.build_command("something_something_v2/tvl1", data_dir)


def test_split_without_usable_videos_is_left_out_and_reported(built, tmp_path):
    manual = tmp_path / "manual"
    (manual / "20bn-something-something-v2").mkdir(parents=True)
    shutil.copy(os.path.join(built[0], "20bn-something-something-v2", "101.webm"),
                manual / "20bn-something-something-v2")
    labels = {"labels": LABELS, "train": [{"id": "101", "template": "Holding [something]"}],
              "validation": [{"id": "104", "template": "Holding [something]"}],
              "test": [{"id": "107"}]}
    (manual / "labels").mkdir()
    for stem, data in labels.items():
        (manual / "labels" / f"{stem}.json").write_text(json.dumps(data))
    data_dir = str(tmp_path / "data")
    run_build_cli("something_something_v2", str(manual), data_dir)
    builder = builders.load("something_something_v2", data_dir)
    assert list(builder.info.splits) == ["train"]
    with open(os.path.join(builder.data_dir, REPORT_NAME)) as f:
        report = json.load(f)
    assert report["problems"] == {"video_missing": 2}
    assert report["info"]["empty_splits"] == ["validation", "test"]
    # no usable video at all is unrecoverable
    (manual / "labels" / "train.json").write_text('[{"id": "104", "template": "Holding x"}]')
    with pytest.raises(DatasetFileError, match="no usable video for any split"):
        run_build_cli("something_something_v2", str(manual), str(tmp_path / "data2"))


@pytest.mark.parametrize("content", ["", "{broken"])
def test_unusable_labels_file_stops_the_build(tmp_path, content):
    manual = tmp_path / "manual"
    (manual / "labels").mkdir(parents=True)
    (manual / "labels" / "labels.json").write_text(content)
    for split in ("train", "validation"):
        (manual / "labels" / f"{split}.json").write_text('[{"id": "1"}]')
    builder = builders.make_builder("something_something_v2", str(tmp_path / "data"))
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    with pytest.raises(DatasetFileError, match=str(manual / "labels" / "labels.json")):
        builder.download_and_prepare(download_config=config)
    assert not builder.is_prepared()
    assert not os.path.exists(builder.data_dir)  # nothing half-written is left behind
