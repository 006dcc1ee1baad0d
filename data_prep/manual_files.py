"""Find and parse the released Something-Something V2 / Something-Else files (no TF).

Every function here either returns clean Python data or raises `DatasetFileError` naming the
file: these files are what the whole build depends on, so a broken one stops it before any
record is written.
"""
import csv
import dataclasses
import glob
import json
import os

from data_prep.report import DatasetFileError

VIDEO_DIR = "20bn-something-something-v2"
FLOW_DIR = "flow"
# A video is the first of these that exists (released webm; mp4 or a frame folder also work).
VIDEO_PATTERNS = ("{id}.webm", "{id}.mp4", "{id}")
# Where box files may sit inside the manual dir.
BOX_DIRS = ("", "boxes", "annotations", "labels")
BOX_GLOB = "bounding_box_smthsmth_part*.json"


def normalise_template(template: str) -> str:
    """`Putting [something] on [something]` -> `Putting something on something`."""
    return str(template).replace("[", "").replace("]", "").strip()


def read_json(path: str):
    if not os.path.isfile(path):
        raise DatasetFileError(f"{path}: file not found")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise DatasetFileError(f"{path}: file is empty")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFileError(f"{path}: not valid JSON ({e})") from e


def find_file(manual_dir: str, candidates: tuple[str, ...]) -> str | None:
    """First candidate (relative to `manual_dir`) that exists."""
    for c in candidates:
        p = os.path.join(manual_dir, c)
        if os.path.isfile(p):
            return p
    return None


def load_label_names(path: str) -> list[str]:
    """labels.json (template -> id, id as str or int) -> templates ordered by id."""
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise DatasetFileError(f"{path}: expected a non-empty {{template: id}} object")
    by_id: dict[int, str] = {}
    for template, idx in data.items():
        try:
            i = int(idx)
        except (TypeError, ValueError) as e:
            raise DatasetFileError(f"{path}: id {idx!r} of {template!r} is not an int") from e
        if i in by_id:
            raise DatasetFileError(f"{path}: id {i} used by {by_id[i]!r} and {template!r}")
        by_id[i] = normalise_template(template)
    if sorted(by_id) != list(range(len(by_id))):
        raise DatasetFileError(f"{path}: ids must be 0..{len(by_id) - 1} without gaps")
    return [by_id[i] for i in range(len(by_id))]


def load_split_list(path: str) -> list[dict]:
    """train/validation/test.json -> list of {"id", "template"?} (ids as strings)."""
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise DatasetFileError(f"{path}: expected a non-empty list of videos")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "id" not in item:
            raise DatasetFileError(f"{path}: entry {i} has no 'id': {item!r}"[:300])
        entry = {"id": str(item["id"])}
        if "template" in item:
            entry["template"] = normalise_template(item["template"])
        out.append(entry)
    return out


def load_test_answers(path: str) -> dict[str, str]:
    """test-answers.csv (`id;template` per line) -> {id: template}."""
    answers = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter=";"), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise DatasetFileError(f"{path}: line {n} is not 'id;template': {row!r}")
            answers[row[0].strip()] = normalise_template(";".join(row[1:]))
    if not answers:
        raise DatasetFileError(f"{path}: file is empty")
    return answers


def find_box_files(manual_dir: str) -> list[str]:
    files = []
    for d in BOX_DIRS:
        files += glob.glob(os.path.join(manual_dir, d, BOX_GLOB))
    return sorted(set(files))


def load_boxes(paths: list[str]) -> dict[str, list]:
    """Merges Something-Else box files into {video_id: [frame annotation, ...]}."""
    index: dict[str, list] = {}
    for p in paths:
        data = read_json(p)
        if not isinstance(data, dict):
            raise DatasetFileError(f"{p}: expected a {{video_id: [frames]}} object")
        for vid, frames in data.items():
            if not isinstance(frames, list):
                raise DatasetFileError(f"{p}: boxes of video {vid!r} are not a list of frames")
            index.setdefault(str(vid), []).extend(frames)
    return index


def find_video(manual_dir: str, video_id: str) -> str | None:
    for pattern in VIDEO_PATTERNS:
        p = os.path.join(manual_dir, VIDEO_DIR, pattern.format(id=video_id))
        if os.path.exists(p):
            return p
    return None


def find_flow_dir(manual_dir: str, video_id: str) -> str | None:
    p = os.path.join(manual_dir, FLOW_DIR, video_id)
    return p if os.path.isdir(p) else None


@dataclasses.dataclass
class SplitFiles:
    """What one dataset reads from the manual dir."""
    label_file: str
    splits: dict[str, str]  # split name -> split list file
    test_answers: str | None = None  # SSv2 only


def ssv2_files(manual_dir: str) -> SplitFiles:
    """Locates SSv2 label files under `labels/` or the manual dir, new or old names."""
    def find(stem: str) -> str | None:
        names = (f"{stem}.json", f"something-something-v2-{stem}.json")
        return find_file(manual_dir, tuple(os.path.join(d, n) for d in ("labels", "")
                                           for n in names))

    label_file = find("labels")
    if label_file is None:
        raise DatasetFileError(f"{manual_dir}: no labels/labels.json (or "
                               "something-something-v2-labels.json) in the manual dir")
    splits = {}
    for split in ("train", "validation", "test"):
        path = find(split)
        if path is None and split != "test":
            raise DatasetFileError(f"{manual_dir}: no labels/{split}.json in the manual dir")
        if path is not None:
            splits[split] = path
    answers = find_file(manual_dir, ("labels/test-answers.csv", "test-answers.csv"))
    return SplitFiles(label_file, splits, answers)


def something_else_files(manual_dir: str, layout: str = "compositional") -> SplitFiles:
    """Locates the Something-Else split files, e.g. `compositional/{labels,train,validation}`."""
    base = os.path.join(manual_dir, layout)
    files = {n: os.path.join(base, f"{n}.json") for n in ("labels", "train", "validation")}
    for path in files.values():
        if not os.path.isfile(path):
            raise DatasetFileError(f"{path}: file not found (Something-Else {layout} split)")
    return SplitFiles(files["labels"], {"train": files["train"],
                                        "validation": files["validation"]})
