"""Problems met while building a dataset: counted per reason, listed per video, saved as JSON.

Recoverable problems (a corrupt video, a box outside the frame, ...) never stop a build and are
never silent: each is added here with the action taken, and the builder writes the report next to
the dataset (`build_report.json`) and logs a one-line summary. Unrecoverable ones (an empty or
unparseable labels file) raise `DatasetFileError` naming the file before anything is written.
"""
import collections
import json
import os

from etils import epath

REPORT_NAME = "build_report.json"

# reason -> what the builder does about it. Every reason a builder can report is listed here.
REASONS: dict[str, str] = {
    "video_missing": "video listed in a split file but not on disk: skipped",
    "video_unreadable": "video cannot be decoded: skipped",
    "too_few_frames": "video has fewer than 2 frames (no flow possible): skipped",
    "unknown_template": "template not in the labels file: skipped (test split: kept, label -1)",
    "duplicate_video": "video id listed twice: later entry skipped",
    "flow_frame_count_mismatch": "released flow frame count != RGB frames - 1: flow recomputed",
    "flow_size_mismatch": "released flow frames differ in size from RGB: flow recomputed",
    "flow_unreadable": "a released flow image cannot be decoded: flow recomputed",
    "boxes_unknown_video": "box file names a video in no split of this dataset: ignored",
    "boxes_missing": "box files given but none for this video: kept with no boxes",
    "box_inverted": "box with x1 > x2 or y1 > y2: corners swapped",
    "box_out_of_frame": "box reaching outside the frame: clipped to the frame",
    "box_empty": "box with no area inside the frame: dropped",
    "box_malformed": "box entry without numeric x1, y1, x2, y2: dropped",
    "box_frame_out_of_range": "boxes for a frame number the video does not have: dropped",
    "box_frame_duplicate": "second annotation of the same frame: dropped",
    "too_many_boxes": "more boxes in a frame than MAX_BOXES: extra boxes dropped",
}

# Videos listed per reason keep this many detail strings each (counts are always complete).
_MAX_DETAILS = 5


class DatasetFileError(ValueError):
    """An input file the whole build depends on is missing, empty or unparseable."""


class BuildReport:
    """Counts problems per reason and lists the videos they hit."""

    def __init__(self, dataset: str = ""):
        self.dataset = dataset
        self._videos: dict[str, dict[str, dict]] = collections.defaultdict(dict)
        self._counts: collections.Counter = collections.Counter()
        self.written: collections.Counter = collections.Counter()  # examples per split
        self.info: dict = {}  # free-form build facts (flow sources, timings, statistics)

    def add(self, reason: str, video_id: str, detail: str = "", split: str = "",
            count: int = 1) -> None:
        """Records `count` occurrences of `reason` for `video_id`."""
        if reason not in REASONS:
            raise KeyError(f"unknown report reason {reason!r}; add it to REASONS")
        entry = self._videos[reason].setdefault(
            video_id, {"count": 0, "split": split, "details": []})
        entry["count"] += count
        if detail and len(entry["details"]) < _MAX_DETAILS:
            entry["details"].append(detail)
        self._counts[reason] += count

    def extend(self, problems: list[tuple[str, str, str]], split: str = "") -> None:
        """Adds `(reason, video_id, detail)` triples, e.g. collected in a worker process."""
        for reason, video_id, detail in problems:
            self.add(reason, video_id, detail, split=split)

    def counts(self) -> dict[str, int]:
        return {r: self._counts[r] for r in REASONS if self._counts[r]}

    def videos(self, reason: str) -> dict[str, dict]:
        return dict(self._videos.get(reason, {}))

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "written": dict(self.written),
            "problems": self.counts(),
            "reasons": {
                r: {"action": REASONS[r], "count": self._counts[r], "videos": self._videos[r]}
                for r in REASONS if self._counts[r]
            },
            "info": self.info,
        }

    def summary(self) -> str:
        written = ", ".join(f"{k} {v}" for k, v in sorted(self.written.items())) or "nothing"
        counts = self.counts()
        problems = ", ".join(f"{r}={n}" for r, n in counts.items()) or "none"
        return (f"{self.dataset}: wrote {sum(self.written.values())} examples ({written}); "
                f"{sum(counts.values())} problems: {problems}")

    def write(self, path: str | os.PathLike) -> None:
        # epath so that data dirs on cloud storage work like local ones.
        epath.Path(path).write_text(json.dumps(self.to_dict(), indent=1))
