"""The Apache Beam path of a build: per-video record making in Beam workers.

A builder takes this path when its build is given Beam options or a runner (`tfds build
--beam_pipeline_options=...`, or `download_and_prepare(download_config=DownloadConfig(
beam_options=...))`); otherwise `data_prep.parallel` runs the same function in a local process
pool. Both paths call the same `fn(job) -> (example | None, facts, problems)` on the same jobs, so
they write the same examples, and the builder replays the same per-video results into the build
report in the same (job) order, so `build_report.json` holds the same counts and lists.

Layout inside the dataset's temporary folder (`<data_path>/_beam/`, removed before TFDS moves the
dataset into place):
  <split>.jobs                 one job per line (index + pickled job), read by the workers
  <split>.results-*-of-*       one line per job: index, key, written?, facts, problems
  progress/<worker>            how many jobs a worker has done (for the launcher's progress line)
Results are keyed by the job index and written through Beam's transactional file sink, so a
retried bundle neither loses nor duplicates a video; examples are keyed by video id, as in the
pool path. Every problem reason is also counted with a Beam metric (namespace `mmkd_data`), which
Dataflow and Flink show while the job runs.
"""
from __future__ import annotations

import base64
import collections
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import apache_beam as beam
from absl import logging
from etils import epath

METRICS_NAMESPACE = "mmkd_data"
WORK_DIR = "_beam"
# A worker rewrites its progress file at most this often (one small write: cheap on GCS too).
_PROGRESS_EVERY_S = 5.0


def _encode(obj) -> str:
    return base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def _decode(line: str):
    return pickle.loads(base64.b64decode(line))


class _MakeRecords(beam.DoFn):
    """Runs `fn` on each job line -> (index, key, example | None, facts, problems)."""

    def __init__(self, fn: Callable, key: Callable[[dict], str], progress_dir: str):
        self._fn, self._key, self._progress_dir = fn, key, progress_dir

    def setup(self):
        import cv2

        # One OpenCV thread per worker: the runner already runs one worker per core.
        cv2.setNumThreads(1)
        self._worker = uuid.uuid4().hex
        self._done, self._last_write = 0, 0.0
        self._videos = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "videos")
        self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "written")

    def process(self, line: str):
        index, job = _decode(line)
        example, facts, problems = self._fn(job)
        self._videos.inc()
        for reason, _, _ in problems:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"problem:{reason}").inc()
        key = None
        if example is not None:
            self._written.inc()
            key = self._key(example)
        self._done += 1
        if time.monotonic() - self._last_write > _PROGRESS_EVERY_S:
            self._write_progress()
        yield index, key, example, facts, problems

    def finish_bundle(self):
        self._write_progress()

    def _write_progress(self):
        self._last_write = time.monotonic()
        if self._done:
            (epath.Path(self._progress_dir) / self._worker).write_text(str(self._done))


def _report_line(result) -> str:
    index, key, example, facts, problems = result
    return _encode((index, key, example is not None, facts, problems))


def _examples(result):
    _, key, example, _, _ = result
    if example is not None:
        yield key, example


class RecordsTransform(beam.PTransform):
    """PBegin -> (key, example) for every job whose record could be made."""

    def __init__(self, jobs_file: str, results_prefix: str, fn: Callable,
                 key: Callable[[dict], str], progress_dir: str):
        super().__init__()
        self._jobs_file, self._results_prefix = jobs_file, results_prefix
        self._fn, self._key, self._progress_dir = fn, key, progress_dir

    def expand(self, pbegin):
        results = (pbegin
                   | "ReadJobs" >> beam.io.ReadFromText(self._jobs_file)
                   # Spreads the videos over the workers (a text file is read in large ranges).
                   | "Spread" >> beam.Reshuffle()
                   | "MakeRecords" >> beam.ParDo(
                       _MakeRecords(self._fn, self._key, self._progress_dir)))
        _ = (results
             | "ReportLines" >> beam.Map(_report_line)
             | "WriteResults" >> beam.io.WriteToText(self._results_prefix))
        return results | "Examples" >> beam.FlatMap(_examples)


class Progress:
    """Logs done/total, rate and ETA of a Beam build from the workers' progress files.

    Polls every `poll_s`; logs every `poll_s` in the first minute, then every 30 s (a day-long
    build should not flood its log), and once more with the totals when the pipeline is done."""

    def __init__(self, name: str, progress_dir: epath.Path, poll_s: float = 5.0):
        self._name, self._dir, self._poll = name, progress_dir, poll_s
        self.total = 0
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="beam-progress")
        self._thread.start()

    def done(self) -> int:
        total = 0
        for f in self._dir.glob("*"):
            try:
                total += int(f.read_text() or 0)
            except (OSError, ValueError):  # a file being rewritten: the next poll reads it
                continue
        return total

    def _run(self):
        first = None  # (time, count) at the first progress seen: start-up is not throughput
        last_log, last_done = 0.0, 0
        while not self._stop.wait(self._poll):
            now = time.monotonic()
            if now - last_log < (self._poll if now - self._start < 60 else 30.0):
                continue
            done = self.done()
            if not done or done == last_done:
                continue
            if first is None:
                first = (now, done)
            rate = (done - first[1]) / (now - first[0]) if now > first[0] else 0.0
            eta = (f"ETA {(self.total - done) / rate / 60:.1f} min" if rate > 0
                   else "ETA at the next line")
            logging.info("%s (beam): %d/%d videos (%.0f%%) after %.0f s, %.2f videos/s, %s",
                         self._name, done, self.total, 100 * done / max(1, self.total),
                         now - self._start, rate, eta)
            last_log, last_done = now, done

    def stop(self, finished: bool = True):
        self._stop.set()
        self._thread.join(timeout=5)
        if finished:
            seconds = time.monotonic() - self._start
            logging.info("%s (beam): %d/%d videos done in %.1f s (%.2f videos/s, start-up "
                         "included)", self._name, self.done(), self.total, seconds,
                         self.done() / max(seconds, 1e-9))


class BeamRecords:
    """One builder's Beam build: writes each split's jobs, then replays the workers' results."""

    def __init__(self, name: str, data_path: epath.Path):
        self.work_dir = data_path / WORK_DIR
        self.progress_dir = self.work_dir / "progress"
        self.progress_dir.mkdir(parents=True, exist_ok=True)
        self.progress = Progress(name, self.progress_dir)
        self.splits: list[str] = []

    def transform(self, split: str, fn: Callable, jobs: Iterable, key: Callable[[dict], str]
                  ) -> RecordsTransform:
        jobs_file = self.work_dir / f"{split}.jobs"
        count = 0
        with jobs_file.open("w") as f:
            for count, job in enumerate(jobs, start=1):
                f.write(_encode((count - 1, job)) + "\n")
        self.progress.total += count
        self.splits.append(split)
        return RecordsTransform(str(jobs_file), str(self.work_dir / f"{split}.results"), fn, key,
                                str(self.progress_dir))

    def results(self, split: str) -> list[tuple]:
        """(index, key, written, facts, problems) per job of `split`, in job order."""
        rows = [_decode(line) for f in sorted(self.work_dir.glob(f"{split}.results-*"))
                for line in f.read_text().splitlines() if line]
        rows.sort(key=lambda r: r[0])
        indices = [r[0] for r in rows]
        if len(set(indices)) != len(indices):  # the sink is transactional: this is a bug
            dup = [i for i, n in collections.Counter(indices).items() if n > 1]
            raise RuntimeError(f"beam build: job(s) {dup[:5]} of split {split} reported twice")
        return rows

    def remove_work_files(self):
        if self.work_dir.exists():
            self.work_dir.rmtree()


def counters(pipeline_result) -> dict[str, int]:
    """The build's `mmkd_data` counters (committed where the runner has them)."""
    query = pipeline_result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
    out = {}
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value)
    return dict(sorted(out.items()))
