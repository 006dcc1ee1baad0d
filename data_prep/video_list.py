"""A user's list of videos (CSV or JSON) -> clean entries and a label map (no TF).

The list names one video per row: a video file or a folder of frame images, its label, and
optionally its split, an id and a folder of released TSN flow. Paths are relative to the list
file's folder (or absolute). Like `data_prep.manual_files`, everything here returns clean Python
data or raises `DatasetFileError` naming the file, before any record is written; problems with
single videos (missing file, unknown label, ...) are left to the builder's report.

CSV (header row required; `,` `;` or tab separated):

    video,label,split
    clips/push_01.mp4,pushing,train
    frames/lift_07/,lifting,validation

JSON: a list of objects with the same keys, e.g. `[{"video": "clips/push_01.mp4", "label":
"pushing", "split": "train"}]`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import re

from data_prep.manual_files import load_label_names, read_json
from data_prep.report import DatasetFileError

# Looked for in the manual dir when the builder config names no list file.
DEFAULT_LIST_FILES = ("videos.csv", "videos.json")
# Label maps next to the list file: labels.json ({name: id}, as SSv2) or labels.txt (one name
# per line, id = line number). Without one, the labels are the sorted unique list values.
LABEL_FILES = ("labels.json", "labels.txt")
COLUMNS = {"video": ("video", "path"), "label": ("label",), "split": ("split",),
           "id": ("id", "video_id"), "flow": ("flow",)}
DEFAULT_SPLIT = "train"
# The split where a row may have no label (kept with label -1), as SSv2's test split.
UNLABELLED_SPLIT = "test"
_SPLIT_NAME = re.compile(r"^[A-Za-z]\w*$")
_VIDEO_SUFFIX = re.compile(r"\.(webm|mp4|avi|mkv|mov|m4v|mpg|mpeg|ogv|gif)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One row of the list, paths resolved against the list's folder."""

    video_id: str
    video_path: str
    label: str  # "" when the row has none
    split: str
    flow_dir: str | None  # the row's `flow` column, if any
    row: int  # 1-based row number in the list (for messages)


def find_list_file(list_file: str, manual_dir: str | None) -> str:
    """The list to read: `list_file` (absolute, or relative to the manual dir), else the first
    of DEFAULT_LIST_FILES in the manual dir."""
    if list_file:
        path = list_file if os.path.isabs(list_file) or manual_dir is None else os.path.join(
            manual_dir, list_file)
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isfile(path):
            raise DatasetFileError(f"{path}: video list not found")
        return path
    if manual_dir is None:
        raise DatasetFileError("no video list: give --manual_dir (holding videos.csv or "
                               "videos.json) or a config with list_file")
    for name in DEFAULT_LIST_FILES:
        path = os.path.join(manual_dir, name)
        if os.path.isfile(path):
            return path
    raise DatasetFileError(f"{manual_dir}: no {' or '.join(DEFAULT_LIST_FILES)} in the manual "
                           "dir (or name the list with the config's list_file)")


def _read_rows(path: str) -> list[dict]:
    """Raw rows (dicts of strings) of a CSV or JSON list."""
    if path.lower().endswith(".json"):
        data = read_json(path)
        if not isinstance(data, list) or not data:
            raise DatasetFileError(f"{path}: expected a non-empty list of video objects")
        for i, row in enumerate(data, 1):
            if not isinstance(row, dict):
                raise DatasetFileError(f"{path}: entry {i} is not an object: {row!r}"[:300])
        return [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in data]
    with open(path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    if not text.strip():
        raise DatasetFileError(f"{path}: file is empty")
    header = text.lstrip().splitlines()[0]
    delimiter = max(",;\t", key=header.count)
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    rows = [r for r in rows if any(r.values())]
    if not rows:
        raise DatasetFileError(f"{path}: no rows below the header")
    return rows


def _column(row: dict, key: str) -> str:
    return next((row[name] for name in COLUMNS[key] if row.get(name)), "")


def default_video_id(relative_path: str) -> str:
    """`clips/push_01.mp4` -> `clips/push_01`; a frame folder keeps its path."""
    rel = relative_path.replace(os.sep, "/").rstrip("/")
    return _VIDEO_SUFFIX.sub("", rel)


def load_video_list(path: str) -> list[VideoEntry]:
    """Parses the list; raises DatasetFileError for a missing column or a bad split name."""
    rows = _read_rows(path)
    present = set().union(*rows)
    if not present & set(COLUMNS["video"]):
        raise DatasetFileError(f"{path}: no 'video' column (found {sorted(present)})")
    if not present & set(COLUMNS["label"]):
        raise DatasetFileError(f"{path}: no 'label' column (found {sorted(present)})")
    base = os.path.dirname(os.path.abspath(path))
    entries = []
    for n, row in enumerate(rows, 1):
        video = _column(row, "video")
        if not video:
            raise DatasetFileError(f"{path}: row {n} names no video: {row!r}"[:300])
        split = _column(row, "split") or DEFAULT_SPLIT
        if not _SPLIT_NAME.match(split):
            raise DatasetFileError(f"{path}: row {n}: split {split!r} is not a name "
                                   "(letters, digits, _)")
        video_path = os.path.normpath(os.path.join(base, os.path.expanduser(video)))
        flow = _column(row, "flow")
        rel = os.path.relpath(video_path, base)
        if rel.startswith(os.pardir):  # outside the list's folder: its own name
            rel = os.path.basename(video_path)
        entries.append(VideoEntry(
            video_id=_column(row, "id") or default_video_id(rel), video_path=video_path,
            label=_column(row, "label"), split=split,
            flow_dir=os.path.normpath(os.path.join(base, flow)) if flow else None, row=n))
    return entries


def _sort_key(labels: list[str]):
    # Integer labels ("1", "2", ..., "10") sort as numbers, anything else as text.
    if all(re.fullmatch(r"-?\d+", label) for label in labels):
        return int
    return str


def load_labels(list_path: str, entries: list[VideoEntry]) -> tuple[list[str], str | None]:
    """(label names ordered by class id, the label file read or None).

    From labels.json / labels.txt next to the list when present, else the sorted unique labels
    of the list (numerically when they are all integers).
    """
    base = os.path.dirname(os.path.abspath(list_path))
    for name in LABEL_FILES:
        path = os.path.join(base, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".json"):
            return load_label_names(path), path
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise DatasetFileError(f"{path}: file is empty")
        if len(set(names)) != len(names):
            raise DatasetFileError(f"{path}: a label is listed twice")
        return names, path
    labels = sorted({e.label for e in entries if e.label}, key=_sort_key(
        [e.label for e in entries if e.label]))
    if not labels:
        raise DatasetFileError(f"{list_path}: no row has a label")
    return labels, None
