"""Classify videos with a trained RGB model (the student): `python -m mmkd_jax.predict`.

    python -m mmkd_jax.predict --workdir=/tmp/mmkd/distill clip.webm other.mp4 frames_dir/
    python -m mmkd_jax.predict --checkpoint=/copy/checkpoints/14 --json clip.webm
    python -m mmkd_jax.predict --hf_dir=/path/to/timesformer-base-finetuned-ssv2 clip.webm

Reads webm/mp4/avi files or folders of frame images, applies the eval preprocessing (segment
midpoints, centre crop, resize, ImageNet normalisation; see mmkd_jax/inference.py) and prints
the top-k classes with probabilities, or one JSON document with `--json`. A file that cannot be
read is reported (stderr, and as an `error` entry in the JSON) and the others are still
classified; the exit status is 1 when any file failed. A video that is shorter than the frames
the model samples, or whose decoded frames cover less time than its container declares
(truncated, damaged), is still classified, with a warning on stderr and in its JSON entry
(`warnings`). Needs only the checkpoint: its metadata holds the model config and the class
names. A checkpoint with non-finite params (a diverged run) is refused. No TensorFlow.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable

from absl import app, flags, logging


def frame_warnings(video, needed: int) -> list[str]:
    """What makes a prediction on `video` less trustworthy than the model's eval protocol."""
    out = []
    if video.truncated:
        out.append(f"the {video.num_frames} decoded frames cover {video.decoded_seconds:.1f} s "
                   f"of the {video.declared_seconds:.1f} s the file declares (truncated or "
                   "damaged file)")
    if video.num_frames < needed:
        out.append(f"{video.num_frames} frames found, the model samples {needed}: frames are "
                   "repeated")
    return out


def classify(model, paths: Iterable[str], top_k: int = 5) -> list[dict]:
    """One result dict per path, in order: {"path", "top", "num_frames", ...} or {"path",
    "error"}; "warnings" lists frame shortfalls (`frame_warnings`). A failure to read one video
    never stops the others."""
    from mmkd_jax import inference
    from mmkd_jax.data.video_io import read_video

    results = []
    for path in paths:
        start = time.perf_counter()
        try:
            video = read_video(path)
        except (OSError, ValueError) as e:  # VideoReadError, FileNotFoundError, bad frames
            results.append({"path": path, "error": f"{type(e).__name__}: {e}"})
            continue
        clip = model.preprocessing(video.frames)[None]
        logits = model.logits(clip)[0]
        n, h, w = video.frames.shape[:3]
        results.append({"path": path, "num_frames": n, "frame_size": [h, w], "fps": video.fps,
                        "top": inference.top_k(logits, model.label_names, top_k),
                        "seconds": round(time.perf_counter() - start, 3),
                        "warnings": frame_warnings(video, model.preprocessing.num_frames)})
    return results


def format_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['path']}: ERROR {r['error']}")
            continue
        h, w = r["frame_size"]
        lines.append(f"{r['path']}  ({r['num_frames']} frames, {w}x{h})")
        for rank, c in enumerate(r["top"], 1):
            lines.append(f"  {rank}. {100 * c['probability']:6.2f}%  {c['label']}")
    return "\n".join(lines)


def define_flags() -> dict[str, flags.FlagHolder]:
    """The command's flags (defined on demand so predict and export import side by side)."""
    return {
        **model_flags(),
        "top_k": flags.DEFINE_integer("top_k", 5, "How many classes to print per video."),
        "json": flags.DEFINE_bool("json", False, "Print one JSON document instead of text."),
    }


def model_flags() -> dict[str, flags.FlagHolder]:
    """--workdir / --checkpoint / --hf_dir / --step, shared with mmkd_jax.export."""
    return {
        "workdir": flags.DEFINE_string("workdir", None, "A training workdir: uses its best "
                                       "checkpoint (or --step)."),
        "checkpoint": flags.DEFINE_string("checkpoint", None, "A checkpoint: WORKDIR/"
                                          "checkpoints/<step>, or a checkpoints dir (best "
                                          "step, or --step)."),
        "hf_dir": flags.DEFINE_string("hf_dir", None, "A Hugging Face TimeSformer "
                                      "save_pretrained dir (converted on the fly; its own "
                                      "labels and normalisation)."),
        "step": flags.DEFINE_integer("step", None, "Checkpoint step (default: best by eval "
                                     "top-1)."),
    }


def load_from_flags(f: dict[str, flags.FlagHolder]):
    from mmkd_jax import inference

    try:
        return inference.load_model(f["workdir"].value, f["checkpoint"].value,
                                    f["hf_dir"].value, f["step"].value)
    except (ValueError, FileNotFoundError) as e:  # NonFiniteParamsError is a ValueError
        # A wrong model or path is not a usage error: say what is wrong, without the help text.
        raise SystemExit(f"error: {e}") from e


def main(argv: list[str], f: dict[str, flags.FlagHolder]) -> int:
    paths = argv[1:]
    if not flags.FLAGS["verbosity"].present:
        # orbax logs every restore at INFO/WARNING; a CLI should print its answer only.
        logging.set_verbosity(logging.ERROR)
    if not paths:
        raise app.UsageError("give one or more video files or frame folders")
    model = load_from_flags(f)
    results = classify(model, paths, f["top_k"].value)
    failed = [r for r in results if "error" in r]
    for r in results:
        for warning in r.get("warnings", []):
            print(f"warning: {r['path']}: {warning}", file=sys.stderr)
    for r in failed:
        print(f"error: {r['path']}: {r['error']}", file=sys.stderr)
    if f["json"].value:
        doc = {"model": {k: v for k, v in model.source.items() if k != "metrics"},
               "preprocessing": model.preprocessing.describe(), "results": results}
        print(json.dumps(doc, indent=2))
    else:
        print(format_text([r for r in results if "error" not in r]))
    return 1 if failed else 0


def run() -> None:
    # TF is not needed here; keep its C++ logging quiet in case a dependency imports it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A file no decoder reads makes OpenCV and its FFmpeg print native errors; the per-file
    # error message already names every decoder's reason.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    f = define_flags()
    app.run(lambda argv: main(argv, f))


if __name__ == "__main__":
    run()
