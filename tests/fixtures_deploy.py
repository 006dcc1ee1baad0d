"""Shared inputs of the deployment tests (predict, export, notebooks, inference cost).

`trained_rgb_workdir()` trains the tiny RGB baseline for a few steps with the real command, once
per test session (kept in the session dir of conftest.py): a student-shaped RGB TimeSformer
with a genuine workdir (config.json, results.json, checkpoints/<step>).
`eval_records(data_cfg)` returns the eval split's raw records (JPEG bytes kept as stored).
"""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RGB_STEPS = 3
# Tiny models run in microseconds, so CI time is XLA compile time: skipping LLVM's expensive
# passes cuts it ~4x (measured: tiny STLT train step 43 s -> 9 s on 2 busy cores).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def fast_compile_env() -> dict[str, str]:
    return {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_FLAGS).strip()}


def session_dir() -> str:
    # conftest.py points TFDS_DATA_DIR into the session's private temp dir.
    return os.path.dirname(os.environ["TFDS_DATA_DIR"])


def trained_rgb_workdir() -> str:
    """`python -m mmkd_jax.main --config=configs/baseline_rgb.py:tiny` for RGB_STEPS steps."""
    workdir = os.path.join(session_dir(), "deploy_rgb")
    if os.path.exists(os.path.join(workdir, "results.json")):
        return workdir
    cmd = [sys.executable, "-m", "mmkd_jax.main", "--config=configs/baseline_rgb.py:tiny",
           f"--config.total_steps={RGB_STEPS}", f"--workdir={workdir}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **fast_compile_env()})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return workdir


def eval_records(data_cfg) -> dict[str, dict]:
    """video_id -> {"jpegs": [bytes], "label": int} for the eval split, as stored."""
    import tensorflow_datasets as tfds

    from mmkd_jax.data import records

    builder = records.load_builder(data_cfg.name, data_cfg.get("data_dir") or None)
    ds = builder.as_dataset(split=data_cfg.eval_split, shuffle_files=False,
                            decoders={"frames": tfds.decode.SkipDecoding()})
    return {ex["video_id"].decode(): {"jpegs": list(ex["frames"]), "label": int(ex["label"])}
            for ex in tfds.as_numpy(ds)}


def decode_jpegs(jpegs: list[bytes]) -> np.ndarray:
    """JPEG bytes -> uint8 (N, H, W, 3) RGB, decoded with OpenCV (as predict's folder reader)."""
    return np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR),
                                  cv2.COLOR_BGR2RGB) for j in jpegs])


def write_frame_folder(folder: str, jpegs: list[bytes]) -> str:
    os.makedirs(folder, exist_ok=True)
    for i, data in enumerate(jpegs):
        with open(os.path.join(folder, f"{i + 1:05d}.jpg"), "wb") as f:
            f.write(data)
    return folder


def write_mp4(path: str, frames: np.ndarray, fps: int = 12) -> str:
    """MPEG-4 part 2 in an .mp4 (an encoder every FFmpeg build has)."""
    from fractions import Fraction

    import av

    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000  # near-lossless at test sizes
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_corrupt_video(path: str) -> str:
    """A file with an MP4 signature and garbage after it: no decoder can read it."""
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path
