"""Unit tests of the data_prep pieces: boxes, release-file parsing, report, records, pool."""
import json
import os

import numpy as np
import pytest

from data_prep import boxes, manual_files, parallel, records, report
from data_prep.report import DatasetFileError


def _label(x1, y1, x2, y2, category="cup"):
    return {"box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}, "category": category}


def test_boxes_normalised_matched_by_frame_number_not_shifted():
    frames = [
        {"name": "7/0002.jpg", "labels": [_label(20, 10, 60, 30, "hand"), _label(0, 0, 100, 50)]},
        {"name": "7/0004.jpg", "labels": []},
    ]
    track, problems = boxes.boxes_from_annotations(frames, 5, height=50, width=100, video_id="7",
                                                   max_boxes=3)
    assert problems == []
    np.testing.assert_array_equal(track.num_boxes, [0, 2, 0, 0, 0])
    np.testing.assert_allclose(track.boxes[1, :2], [[0.2, 0.2, 0.6, 0.6], [0, 0, 1, 1]])
    np.testing.assert_array_equal(track.categories[1], [1, 2, 0])
    assert track.boxes.shape == (5, 3, 4) and not track.boxes[[0, 2, 3, 4]].any()


@pytest.mark.parametrize("label,reason,expected", [
    (_label(60, 30, 20, 10), "box_inverted", [0.2, 0.2, 0.6, 0.6]),
    (_label(-10, 40, 120, 70), "box_out_of_frame", [0.0, 0.8, 1.0, 1.0]),
    (_label(110, 10, 130, 20), "box_empty", None),
    (_label(10, 10, 10, 20), "box_empty", None),
    ({"box2d": {"x1": 1, "y1": 2, "x2": "a", "y2": 4}}, "box_malformed", None),
    ({"category": "cup"}, "box_malformed", None),
    (_label(1, 2, float("nan"), 4), "box_malformed", None),
])
def test_each_box_problem_is_reported_and_fixed(label, reason, expected):
    track, problems = boxes.boxes_from_annotations([{"name": "v/0001.jpg", "labels": [label]}],
                                                   2, height=50, width=100, video_id="v")
    assert [p[0] for p in problems][-1] == reason and all(p[1] == "v" for p in problems)
    if expected is None:
        assert track.num_boxes[0] == 0
    else:
        assert track.num_boxes[0] == 1
        np.testing.assert_allclose(track.boxes[0, 0], expected, atol=1e-6)


def test_frame_problems_and_too_many_boxes():
    frames = [{"name": "v/0009.jpg", "labels": [_label(1, 1, 5, 5)]},  # beyond 3 frames
              {"name": "no-number.jpg", "labels": [_label(1, 1, 5, 5)]},
              {"name": "v/0001.jpg", "labels": [_label(1, 1, 5, 5)] * 4},
              {"name": "v/0001.jpg", "labels": [_label(1, 1, 5, 5)]}]
    track, problems = boxes.boxes_from_annotations(frames, 3, 10, 10, "v", max_boxes=2)
    reasons = [p[0] for p in problems]
    assert reasons == ["box_frame_out_of_range", "box_frame_out_of_range", "too_many_boxes",
                       "too_many_boxes", "box_frame_duplicate"]
    np.testing.assert_array_equal(track.num_boxes, [2, 0, 0])


def test_frame_number_parsing():
    assert boxes.frame_number("12345/0007.jpg") == 7
    assert boxes.frame_number("0100.png") == 100
    assert boxes.frame_number("x/abc.jpg") is None


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("content,message", [
    ("", "file is empty"),
    ("   \n", "file is empty"),
    ("{not json", "not valid JSON"),
    ("[]", "non-empty"),
    ("{}", "non-empty"),
    ('{"a": "0", "b": "2"}', "without gaps"),
    ('{"a": "0", "b": "0"}', "id 0 used by"),
    ('{"a": "x"}', "is not an int"),
])
def test_unusable_labels_file_raises_naming_it(tmp_path, content, message):
    path = str(tmp_path / "labels" / "labels.json")
    _write(path, content)
    with pytest.raises(DatasetFileError, match=message) as e:
        manual_files.load_label_names(path)
    assert path in str(e.value)


def test_label_names_ordered_by_id_brackets_removed(tmp_path):
    path = str(tmp_path / "labels.json")
    _write(path, json.dumps({"Moving [something] up": "1", "Holding something": 0}))
    assert manual_files.load_label_names(path) == ["Holding something", "Moving something up"]


def test_split_and_answers_files(tmp_path):
    split = str(tmp_path / "train.json")
    _write(split, json.dumps([{"id": 5, "template": "Put [x] on [y]"}, {"id": "6"}]))
    assert manual_files.load_split_list(split) == [{"id": "5", "template": "Put x on y"},
                                                   {"id": "6"}]
    _write(split, json.dumps([{"template": "no id"}]))
    with pytest.raises(DatasetFileError, match="entry 0 has no 'id'"):
        manual_files.load_split_list(split)
    answers = str(tmp_path / "test-answers.csv")
    _write(answers, "1;Moving [something] up\n\n2;Holding something\n")
    assert manual_files.load_test_answers(answers) == {"1": "Moving something up",
                                                       "2": "Holding something"}
    _write(answers, "1 Moving up\n")
    with pytest.raises(DatasetFileError, match="line 1"):
        manual_files.load_test_answers(answers)


def test_ssv2_files_new_and_old_names(tmp_path):
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    for stem in ("labels", "train", "validation"):
        _write(os.path.join(new, "labels", f"{stem}.json"), "{}")
        _write(os.path.join(old, f"something-something-v2-{stem}.json"), "{}")
    _write(os.path.join(old, "something-something-v2-test.json"), "[]")
    f_new, f_old = manual_files.ssv2_files(new), manual_files.ssv2_files(old)
    assert sorted(f_new.splits) == ["train", "validation"] and f_new.test_answers is None
    assert sorted(f_old.splits) == ["test", "train", "validation"]
    assert f_old.label_file.endswith("something-something-v2-labels.json")
    with pytest.raises(DatasetFileError, match="labels.json"):
        manual_files.ssv2_files(str(tmp_path / "nothing"))


def test_box_file_must_map_videos_to_lists(tmp_path):
    path = str(tmp_path / "bounding_box_smthsmth_part1.json")
    _write(path, json.dumps({"1": {"name": "1/0001.jpg"}}))
    with pytest.raises(DatasetFileError, match="not a list"):
        manual_files.load_boxes([path])
    _write(path, "")
    with pytest.raises(DatasetFileError, match="empty"):
        manual_files.load_boxes([path])


def test_report_counts_lists_and_writes_json(tmp_path):
    r = report.BuildReport("ds/cfg")
    r.add("video_missing", "1", "1.webm", split="train")
    r.extend([("box_out_of_frame", "2", "a"), ("box_out_of_frame", "2", "b"),
              ("box_out_of_frame", "3", "c")], split="validation")
    r.written["train"] += 4
    assert r.counts() == {"video_missing": 1, "box_out_of_frame": 3}
    assert r.videos("box_out_of_frame")["2"] == {"count": 2, "split": "validation",
                                                 "details": ["a", "b"]}
    assert r.summary() == ("ds/cfg: wrote 4 examples (train 4); 4 problems: video_missing=1, "
                           "box_out_of_frame=3")
    r.write(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["problems"] == {"video_missing": 1, "box_out_of_frame": 3}
    assert saved["reasons"]["video_missing"]["action"] == report.REASONS["video_missing"]
    with pytest.raises(KeyError, match="unknown report reason"):
        r.add("made_up", "1")


def test_make_example_checks_alignment():
    frames = np.zeros((3, 8, 10, 3), np.uint8)
    track = boxes.empty_track(3)
    ex = records.make_example(video_id="v", label=2, template="t", frames=frames, boxes=track,
                              flow_method="farneback")
    assert len(ex["frames"]) == 3 and len(ex["flow_x"]) == len(ex["flow_y"]) == 2
    np.testing.assert_array_equal(ex["frame_size"], [8, 10])
    with pytest.raises(ValueError, match="flow must have 2 frames"):
        records.make_example(video_id="v", label=2, template="t", frames=frames, boxes=track,
                             flow_jpegs=([b"x"], [b"y"]))
    with pytest.raises(ValueError, match="box frames"):
        records.make_example(video_id="v", label=2, template="t", frames=frames,
                             boxes=boxes.empty_track(2))


def _square(x: int) -> int:
    return x * x


def test_ordered_map_pool_matches_in_process():
    items = list(range(9))
    pooled = list(parallel.ordered_map(_square, items, num_workers=2, chunksize=2, min_items=1))
    assert pooled == [x * x for x in items]
