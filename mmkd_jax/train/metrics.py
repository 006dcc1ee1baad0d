"""Host-side metrics: TensorBoard (clu) + JSONL writers, progress lines with ETA."""
from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers


class Writer:
    """Scalars to TensorBoard (clu) and to `metrics.jsonl`; only process 0 writes files."""

    def __init__(self, workdir: str, name: str = ""):
        self.is_main = jax.process_index() == 0
        # TensorBoard only: progress lines are logged by `log_progress`, not once more here.
        self.tb = metric_writers.SummaryWriter(workdir) if self.is_main else None
        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a") if self.is_main else None
        self.name = name

    def write(self, step: int, scalars: dict) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        if self.tb:
            self.tb.write_scalars(step, scalars)
        if self.jsonl:
            self.jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        if self.tb:
            self.tb.flush()
            self.tb.close()
        if self.jsonl:
            self.jsonl.close()


class Progress:
    """Steps/s, clips/s and ETA over the last logging interval."""

    def __init__(self, total_steps: int, global_batch: int, first_step: int):
        self.total, self.batch = total_steps, global_batch
        self.last_step, self.last_time = first_step, time.perf_counter()

    def update(self, step: int) -> dict:
        now = time.perf_counter()
        dt = max(now - self.last_time, 1e-9)
        steps_per_s = (step - self.last_step) / dt
        self.last_step, self.last_time = step, now
        eta = (self.total - step) / steps_per_s if steps_per_s > 0 else math.inf
        return {"steps_per_s": steps_per_s, "clips_per_s": steps_per_s * self.batch,
                "eta_s": eta}


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def log_progress(prefix: str, step: int, total: int, scalars: dict) -> None:
    logging.info(
        "%s step %d/%d (%.0f%%) loss %.4f | %.2f steps/s %.1f clips/s | ETA %s", prefix, step,
        total, 100.0 * step / max(total, 1), scalars.get("loss", np.nan),
        scalars.get("steps_per_s", np.nan), scalars.get("clips_per_s", np.nan),
        format_eta(scalars.get("eta_s", math.inf)))
