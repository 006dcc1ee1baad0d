"""TFDS base class shared by the three builders: parallel record making plus the build report.

A subclass yields work items; `_records` turns them into examples in worker processes, counts
what was written per split and files every problem in `self.report`, which is saved as
`build_report.json` inside the dataset directory (moved into place with the data) and summarised
in one log line.
"""
import inspect
import os
import time
from collections.abc import Callable, Iterable, Iterator

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from data_prep.parallel import ordered_map
from data_prep.report import REPORT_NAME, BuildReport


def report_path(builder: tfds.core.DatasetBuilder) -> str:
    """Where a prepared builder's build report lives."""
    return os.path.join(os.fspath(builder.data_path), REPORT_NAME)


class ReportedBuilder(tfds.core.GeneratorBasedBuilder):
    """GeneratorBasedBuilder + build report; subclasses call `_records` in their generators."""

    report: BuildReport

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9.10 resolves this through `importlib_resources`, which it imports but declares
        # only for Python < 3.9; the builder's own file is what its fallback returns anyway.
        return epath.Path(inspect.getfile(cls))

    def _download_and_prepare(self, dl_manager, download_config):
        name = f"{self.name}/{self.builder_config.name}" if self.builder_config else self.name
        self.report = BuildReport(name)
        self.facts: dict[str, list[dict]] = {}  # per split, one dict per written example
        start = time.perf_counter()
        super()._download_and_prepare(dl_manager, download_config)
        self.report.info["build_seconds"] = round(time.perf_counter() - start, 2)
        self._finish_report()
        # data_path is the temporary dir here; TFDS renames it to <..>/<version> on success.
        self.report.write(self.data_path / REPORT_NAME)
        final = self.data_path.parent / str(self.info.version) / REPORT_NAME
        logging.info("%s; report: %s", self.report.summary(), final)

    def _finish_report(self) -> None:
        """Hook: summarise `self.facts` into `self.report.info` before the report is written."""

    def _records(self, split: str, fn: Callable, jobs: Iterable,
                 key: Callable[[dict], str] = lambda ex: ex["video_id"]) -> Iterator:
        """Runs `fn(job) -> (example | None, facts, problems)` over `jobs`; yields (key, ex)."""
        facts_list = self.facts.setdefault(split, [])
        workers = getattr(self.builder_config, "num_workers", 0) or None
        for example, facts, problems in ordered_map(fn, jobs, workers):
            self.report.extend(problems, split)
            if example is None:
                continue
            self.report.written[split] += 1
            facts_list.append(facts)
            yield key(example), example
        if not self.report.written[split]:
            # TFDS would fail with "No examples were yielded"; say why instead.
            raise RuntimeError(f"{self.name}: no example of split {split!r} could be made; "
                               f"problems so far: {self.report.counts()}")
