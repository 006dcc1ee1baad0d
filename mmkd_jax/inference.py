"""A trained model plus its eval preprocessing, from a workdir, a checkpoint or a HF directory.

Shared by `predict`, `export`, the notebooks and the tests. No TensorFlow: the preprocessing is
a NumPy copy of the eval pipeline (docs/pipeline.md) - segment-midpoint frames, centre square of
side min(H, W), bilinear resize to S x S (half-pixel centres, no antialiasing, as
`tf.image.resize`), /255, ImageNet normalisation - tested against the pipeline itself.

    model = inference.load("/tmp/mmkd/distill")             # workdir: its best checkpoint
    model = inference.load("/copy/checkpoints/14")            # a checkpoint step dir, or the
    model = inference.load("/copy/checkpoints")               # checkpoints dir (best step)
    logits = model.logits(model.preprocessing(frames)[None])  # frames: uint8 (N, H, W, 3) RGB
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from mmkd_jax import models

# Same values as mmkd_jax.data.color (which imports TF); a test keeps them equal.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINTS_DIR = "checkpoints"
RESULTS_FILE = "results.json"
# Modalities whose eval input is RGB frames (the omnivore model is evaluated on RGB).
RGB_MODALITIES = ("rgb", "omni")


def eval_indices(length: int, num_frames: int) -> np.ndarray:
    """Segment midpoints (docs/pipeline.md): `seg = (L-1)/T`,
    `(round(seg*i) + round(seg*(i+1))) // 2`."""
    seg = (length - 1) / num_frames  # float64 and round-half-to-even, like the TF pipeline
    edges = np.round(seg * np.arange(num_frames + 1, dtype=np.float64)).astype(np.int64)
    return (edges[:-1] + edges[1:]) // 2


def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the eval crop: short side -> S then a centre S x S crop."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32 weights of `tf.image.resize(method="bilinear")` along one axis.

    Half-pixel centres, no antialiasing (TF's `resize_bilinear` kernel): source coordinate
    `(i + 0.5) * in/out - 0.5`, the two neighbours clamped to the image.
    """
    # float32 throughout, as TF's kernel computes the source coordinate: the lerp factors then
    # agree exactly (in float64 they differ by ~1e-5 px at 240 px, ~4e-3 levels on noise).
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(src)
    lerp = src - floor
    lower = np.clip(floor, 0, in_size - 1).astype(np.int64)
    upper = np.clip(np.ceil(src), 0, in_size - 1).astype(np.int64)
    weights = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), np.float32(1.0) - lerp)
    np.add.at(weights, (rows, upper), lerp)
    return weights


def resize_bilinear(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, h, w, C) -> float32 (T, S, S, C) in the input's value range."""
    wy = bilinear_matrix(frames.shape[1], size)
    wx = bilinear_matrix(frames.shape[2], size)
    x = frames.astype(np.float32)
    return np.einsum("yh,xw,thwc->tyxc", wy, wx, x, optimize=True).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The eval view of a clip: T frames, S x S pixels, normalised with `mean` / `std`."""

    num_frames: int
    image_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def pixels(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (T, S, S, 3) in [0, 255]: sampled, cropped, resized.

        This is the input of an exported model that includes the normalisation.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[0] < 1:
            raise ValueError(f"expected frames (N, H, W, C) with N >= 1, got {frames.shape}")
        top, left, side = centre_square(*frames.shape[1:3])
        clip = frames[eval_indices(frames.shape[0], self.num_frames)]
        return resize_bilinear(clip[:, top:top + side, left:left + side], self.image_size)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """[0, 255] pixels -> /255 -> (x - mean) / std, per channel."""
        c = pixels.shape[-1]
        mean = np.asarray(self.mean[:c], np.float32)
        std = np.asarray(self.std[:c], np.float32)
        return ((np.asarray(pixels, np.float32) / np.float32(255.0)) - mean) / std

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB frames -> the model's float32 (T, S, S, 3) input."""
        return self.normalize(self.pixels(frames))

    def describe(self) -> dict:
        return {"num_frames": self.num_frames, "image_size": self.image_size,
                "frame_sampling": "segment midpoints: seg=(L-1)/T, frame i = "
                                  "(round(seg*i) + round(seg*(i+1))) // 2 (round half to even)",
                "spatial": "centre square of side min(H, W), bilinear resize to S x S "
                           "(half-pixel centres, no antialiasing)",
                "scale": "x / 255", "mean": list(self.mean), "std": list(self.std)}


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference: module, params, class names and how to preprocess."""

    module: Any  # flax.linen.Module
    params: Any
    modality: str
    label_names: list[str]
    preprocessing: Preprocessing
    source: dict  # where it came from: kind, path, step, experiment, ...
    config: dict | None = None  # the run's resolved config (checkpoints only)
    results: dict | None = None  # results.json of the run, when found
    _apply: Any = dataclasses.field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def apply(self, params, *inputs) -> jax.Array:
        """Pure forward pass (jit/jax2tf-friendly): float32 logits."""
        return self.module.apply({"params": params}, *inputs, train=False)

    def logits(self, *inputs) -> np.ndarray:
        """Batched inputs (e.g. rgb (B, T, S, S, 3)) -> float32 logits (B, classes), jitted."""
        if self._apply is None:
            self._apply = jax.jit(self.apply)
        return np.asarray(self._apply(self.params, *inputs))

    def accuracy(self) -> dict | None:
        """Eval accuracy of this very checkpoint step.

        From the run's results.json (its eval history at this step, plus the teacher's
        accuracy for a distilled student), else from the metrics saved with the checkpoint.
        """
        step, r = self.source.get("step"), self.results
        if r:
            at_step = [h for h in r.get("history", []) if h.get("step") == step]
            final = at_step[-1] if at_step else (r.get("final") if r.get("steps") == step
                                                 else None)
            if final:
                out = {"top1": final["top1"], "top5": final.get("top5"),
                       "num_examples": final.get("num_examples"), "dataset": r.get("dataset"),
                       "split": r.get("split"), "protocol": r.get("protocol"), "step": step,
                       "source": "results.json"}
                if r.get("teacher"):
                    out["teacher"] = r["teacher"]
                return out
        if self.source.get("metrics"):
            return {**self.source["metrics"], "step": step,
                    "source": "checkpoint metrics (eval at this step)"}
        return None


def _is_step_dir(path: str) -> bool:
    return bool(re.fullmatch(r"\d+", os.path.basename(os.path.normpath(path)))) and (
        os.path.isdir(os.path.join(path, "meta")) or os.path.isdir(os.path.join(path, "params")))


def resolve_checkpoint(path: str, step: int | None = None) -> tuple[str, int | None]:
    """A workdir, a checkpoints dir or one step dir -> (checkpoints dir, step or None = best)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such checkpoint or workdir: {path}")
    if os.path.isdir(os.path.join(path, CHECKPOINTS_DIR)):
        return os.path.join(path, CHECKPOINTS_DIR), step
    if _is_step_dir(path):
        step_here = int(os.path.basename(os.path.normpath(path)))
        if step is not None and step != step_here:
            raise ValueError(f"{path} is the checkpoint of step {step_here}, not {step}")
        return os.path.dirname(os.path.normpath(path)), step_here
    if any(_is_step_dir(os.path.join(path, n)) for n in os.listdir(path)):
        return path, step
    raise FileNotFoundError(f"{path} holds no checkpoint: expected a workdir (with "
                            f"{CHECKPOINTS_DIR}/), a checkpoints dir or a checkpoint step dir")


def _find_results(ckpt_dir: str, experiment: str | None) -> dict | None:
    """results.json of the run that wrote `ckpt_dir`, if it sits next to it."""
    path = os.path.join(os.path.dirname(ckpt_dir), RESULTS_FILE)
    if os.path.basename(ckpt_dir) != CHECKPOINTS_DIR or not os.path.exists(path):
        return None
    with open(path) as f:
        results = json.load(f)
    return results if experiment is None or results.get("experiment") == experiment else None


def load(path: str, step: int | None = None) -> LoadedModel:
    """Loads a trained model from a workdir, a checkpoints dir or a step dir (default: best step).

    Needs only the checkpoint: its `meta` item holds the resolved config and the label names.
    """
    from mmkd_jax.train import checkpoint  # orbax: only when loading a checkpoint

    ckpt_dir, step = resolve_checkpoint(path, step)
    ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
    try:
        if step is None:
            step = ckpt.best_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint steps in {ckpt_dir}")
        meta = ckpt.restore_meta(step)
        params = ckpt.restore_params(step)
        metrics = ckpt.manager.metrics(step) or None  # eval top-1 saved with the step
    finally:
        ckpt.close()
    config = meta["config"]
    data = config["data"]
    modality = config["modality"]
    model_cfg = dict(config["model"])
    module = models.build_model(model_cfg)
    results = _find_results(ckpt_dir, meta.get("experiment"))
    source = {"kind": "checkpoint", "path": os.path.join(ckpt_dir, str(step)), "step": int(step),
              "experiment": meta.get("experiment"), "dataset": data.get("name"),
              "metrics": metrics}
    return LoadedModel(module=module, params=params, modality=modality,
                       label_names=list(meta["label_names"]),
                       preprocessing=Preprocessing(int(data["num_frames"]),
                                                   int(data["image_size"])),
                       source=source, config=config, results=results)


def load_hf(path: str, **overrides: Any) -> LoadedModel:
    """A Hugging Face TimeSformer `save_pretrained` dir -> LoadedModel (RGB, its own labels).

    Mean/std and crop size come from the checkpoint's `preprocessor_config.json` when present
    (they need not be ImageNet's); the frame count from its config.
    """
    from mmkd_jax.convert import timesformer_from_hf

    module, params = timesformer_from_hf(path, **overrides)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    id2label = config.get("id2label") or {}
    labels = [id2label.get(str(i), id2label.get(i, f"class {i}"))
              for i in range(module.num_classes)]
    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, module.image_size
    pre_path = os.path.join(path, "preprocessor_config.json")
    if os.path.exists(pre_path):
        with open(pre_path) as f:
            pre = json.load(f)
        mean = tuple(pre.get("image_mean", mean))
        std = tuple(pre.get("image_std", std))
        crop = pre.get("crop_size", size)
        size = crop.get("height", size) if isinstance(crop, dict) else crop
    return LoadedModel(module=module, params=params, modality="rgb", label_names=labels,
                       preprocessing=Preprocessing(int(module.num_frames), int(size),
                                                   tuple(mean), tuple(std)),
                       source={"kind": "huggingface", "path": os.path.abspath(path)},
                       config={"hf_config": config})


def load_model(workdir: str | None = None, checkpoint: str | None = None,
               hf_dir: str | None = None, step: int | None = None,
               rgb_only: bool = True) -> LoadedModel:
    """Exactly one of a workdir, a checkpoint (dir or step dir), a HF dir -> LoadedModel.

    With `rgb_only`, a model that does not read RGB frames (a flow or layout teacher member)
    is refused with a ValueError saying why.
    """
    given = [x for x in (workdir, checkpoint, hf_dir) if x]
    if len(given) != 1:
        raise ValueError("give exactly one of a workdir, a checkpoint, a Hugging Face dir")
    model = load_hf(hf_dir) if hf_dir else load(given[0], step)
    if rgb_only and model.modality not in RGB_MODALITIES:
        raise ValueError(
            f"{model.source['path']} is a {model.modality!r} model; only models that read RGB "
            "frames (the student, an RGB baseline, omnivore) can classify videos: teacher "
            "members need optical flow or object boxes.")
    return model


def load_teacher(workdir: str) -> list[LoadedModel]:
    """The members of a distillation (or teacher) run's teacher, from its config.json."""
    import ml_collections

    from mmkd_jax.train import members as members_lib

    with open(os.path.join(workdir, members_lib.CONFIG_FILE)) as f:
        config = json.load(f)
    specs = config.get("teacher", {}).get("members") or []
    if not specs:
        raise ValueError(f"{workdir}: the run has no teacher members")
    return [load(members_lib.workdir_of(ml_collections.ConfigDict(s), workdir)) for s in specs]


def teacher_logits(members: Sequence[LoadedModel], batch: dict) -> np.ndarray:
    """The teacher's logit average on a pipeline batch (docs/architecture.md §2)."""
    return np.asarray(models.ensemble_logits(
        [(m.module, m.params, m.modality) for m in members], batch))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_k(logits: np.ndarray, labels: Sequence[str], k: int = 5) -> list[dict]:
    """One clip's logits -> [{"class_id", "label", "probability"}] for the k best, best first."""
    probs = softmax(np.asarray(logits)[None])[0]
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class_id": int(i), "label": labels[i], "probability": float(probs[i])}
            for i in order]
