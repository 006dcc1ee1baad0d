"""TFDS base class shared by the builders: parallel record making plus the build report.

A subclass hands work items to `_records`, which turns them into examples in worker processes (a
local process pool, or Apache Beam workers when the build is given Beam options: see
data_prep/beam_build.py), counts what was written per split and files every problem in
`self.report`, which is saved as `build_report.json` inside the dataset directory (moved into
place with the data) and summarised in one log line.
"""
import collections
import inspect
import os
import time
from collections.abc import Callable, Iterable, Iterator

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from data_prep.parallel import ordered_map
from data_prep.report import REPORT_NAME, BuildReport


def _video_key(example: dict) -> str:
    return example["video_id"]


def _beam_requested(download_config) -> bool:
    """Whether the build was given Beam options or a runner (the `tfds build` Beam flags)."""
    return download_config is not None and (download_config.beam_options is not None
                                            or download_config.beam_runner is not None)


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
        self._beam, self._beam_counters = None, {}
        if _beam_requested(download_config):
            from data_prep import beam_build  # apache_beam: the optional [beam] extra

            self._beam = beam_build.BeamRecords(name, self.data_path)
        start = time.perf_counter()
        try:
            super()._download_and_prepare(dl_manager, download_config)
        except BaseException:
            if self._beam is not None:
                self._beam.progress.stop(finished=False)
            raise
        if self._beam is not None:
            self._beam.progress.stop()  # logs the totals
            self._replay_beam_results()
            self._beam.remove_work_files()  # before TFDS moves the dataset into place
        self.report.info["build_seconds"] = round(time.perf_counter() - start, 2)
        self._finish_report()
        # data_path is the temporary dir here; TFDS renames it to <..>/<version> on success.
        self.report.write(self.data_path / REPORT_NAME)
        final = self.data_path.parent / str(self.info.version) / REPORT_NAME
        logging.info("%s; report: %s", self.report.summary(), final)

    def _finish_report(self) -> None:
        """Hook: summarise `self.facts` into `self.report.info` before the report is written."""

    def _records(self, split: str, fn: Callable, jobs: Iterable,
                 key: Callable[[dict], str] = _video_key):
        """`fn(job) -> (example | None, facts, problems)` over `jobs` -> what
        `_generate_examples` returns: (key, example) pairs from the process pool, or the Beam
        transform that makes them in Beam workers. `fn`, `key` and the jobs must pickle."""
        if self._beam is not None:
            return self._beam.transform(split, fn, jobs, key)
        return self._pool_records(split, fn, jobs, key)

    def _pool_records(self, split: str, fn: Callable, jobs: Iterable,
                      key: Callable[[dict], str]) -> Iterator:
        self.facts.setdefault(split, [])
        workers = getattr(self.builder_config, "num_workers", 0) or None
        for example, facts, problems in ordered_map(fn, jobs, workers):
            if self._file_result(split, example is not None, facts, problems):
                yield key(example), example
        self._check_written(split)

    def _file_result(self, split: str, written: bool, facts: dict, problems: list) -> bool:
        """Files one job's outcome in the report (in job order, on either path)."""
        self.report.extend(problems, split)
        if written:
            self.report.written[split] += 1
            self.facts.setdefault(split, []).append(facts)
        return written

    def _check_written(self, split: str) -> None:
        if not self.report.written[split]:
            # TFDS would fail with "No examples were yielded"; say why instead.
            raise RuntimeError(f"{self.name}: no example of split {split!r} could be made; "
                               f"problems so far: {self.report.counts()}")

    def _replay_beam_results(self) -> None:
        """After the pipeline: the workers' per-job results into the report, in job order."""
        from_workers = collections.Counter()
        for split in self._beam.splits:
            self.facts.setdefault(split, [])
            for _, _, written, facts, problems in self._beam.results(split):
                self._file_result(split, written, facts, problems)
                from_workers.update(f"problem:{reason}" for reason, _, _ in problems)
            self._check_written(split)
        counted = {k: v for k, v in self._beam_counters.items() if k.startswith("problem:")}
        if counted != dict(from_workers):
            # Committed counters are exact; a runner with attempted ones only counts retries.
            logging.warning("%s: beam counters %s differ from the workers' results %s; the "
                            "report holds the results", self.name, counted, dict(from_workers))
        self.report.info["beam_counters"] = self._beam_counters

    def _process_pipeline_result(self, pipeline_result) -> None:
        # TFDS calls this once the Beam pipeline has finished.
        super()._process_pipeline_result(pipeline_result)
        from data_prep import beam_build

        self._beam_counters = beam_build.counters(pipeline_result)
        logging.info("%s: beam counters %s", self.name, self._beam_counters)
