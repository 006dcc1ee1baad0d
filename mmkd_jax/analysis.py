"""Per-video predictions and pooled features of a trained run (`--config.mode=predict`).

    python -m mmkd_jax.main --config=configs/baseline_rgb.py:tiny --workdir=/tmp/mmkd/rgb \
        --config.mode=predict [--config.analysis.split=train] [--config.analysis.checkpoint=latest]

writes, next to the run's checkpoints,
  predictions_<split>.jsonl  one line per video: video_id, label (dataset id, -1 unknown),
                             label_name, top (k best: class_id, label, probability), logits
  features_<split>.npz       video_ids (N,), features (N, D) pooled pre-head features (the
                             TimeSformer's final-norm cls token, STLT's extract token), logits
                             (N, C), labels (N,), info (JSON: checkpoint, step, protocol, ...)
in split order (the one-process read order, whatever the number of processes), padding
excluded; with several processes every process computes its share and process 0 writes. The
model, its classes and its view parameters come from the checkpoint's meta
(mmkd_jax/checkpoint_meta.py); the command line picks the data, the split, the eval views
(`config.eval`, logits and features averaged over views) and the checkpoint.
"""
from __future__ import annotations

import json
import os
import re
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mmkd_jax import checkpoint_meta, models
from mmkd_jax.convert import mmkd_checkpoint
from mmkd_jax.data import pipeline
from mmkd_jax.train import checkpoint, evaluate, sharding, state

# Data fields that must match the trained model (the clip it was trained to read).
VIEW_FIELDS = ("num_frames", "image_size", "num_boxes", "flow_channels")
ID_BYTES = 512  # video ids travel between processes as fixed-width byte rows


def default_analysis_config() -> ml_collections.ConfigDict:
    """`config.analysis`: what mode=predict reads."""
    return ml_collections.ConfigDict({
        "split": "",  # "" = config.data.eval_split; any TFDS split string ("train[:100]")
        "checkpoint": "best",  # best | latest | <step> | a workdir, checkpoints dir or step dir
        "top_k": 5,
        "features": True,  # also write pooled features (a second forward pass per batch)
    })


def file_tag(split: str) -> str:
    """`validation` -> `validation`; `train[:10%]` -> `train_10pct`."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]", "_", split.replace("%", "pct"))).strip("_")


def pick_checkpoint(choice: str, workdir: str) -> tuple[checkpoint.Checkpointer, int]:
    """(checkpointer, step) for `config.analysis.checkpoint` (see default_analysis_config)."""
    choice = str(choice or "best")
    if choice in ("best", "latest") or choice.isdigit():
        ckpt_dir, step = os.path.join(workdir, "checkpoints"), None
    else:
        ckpt_dir, step = mmkd_checkpoint.resolve(choice)
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"mode=predict: no checkpoints in {ckpt_dir}; train this run "
                                "first (same command without --config.mode=predict) or point "
                                "config.analysis.checkpoint at one")
    ckpt = checkpoint.Checkpointer(ckpt_dir, read_only=True)
    if choice.isdigit():
        step = int(choice)
    elif step is None:
        step = ckpt.latest_step() if choice == "latest" else ckpt.best_step()
    if step is None or step not in ckpt.manager.all_steps():
        raise FileNotFoundError(f"mode=predict: checkpoint step {step} not in {ckpt_dir} "
                                f"(steps: {list(ckpt.manager.all_steps())})")
    return ckpt, int(step)


def _data_config(config: ml_collections.ConfigDict, meta: dict) -> ml_collections.ConfigDict:
    data = ml_collections.ConfigDict(config.data.to_dict())
    trained = meta["config"]["data"]
    for key in VIEW_FIELDS:
        if key in trained and data.get(key) != trained[key]:
            logging.info("mode=predict: data.%s = %s, as the checkpoint was trained (not %s)",
                         key, trained[key], data.get(key))
            data[key] = trained[key]
    return data


def _encode_ids(ids: np.ndarray) -> np.ndarray:
    out = np.zeros((len(ids), ID_BYTES), np.uint8)
    for i, vid in enumerate(ids):
        raw = vid if isinstance(vid, bytes) else str(vid).encode()
        if len(raw) > ID_BYTES:
            raise ValueError(f"video id longer than {ID_BYTES} bytes: {raw[:80]!r}...")
        out[i, :len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def _decode_id(row: np.ndarray) -> str:
    return bytes(row).rstrip(b"\0").decode()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, label_names: list[str], k: int) -> list[dict]:
    """One video's logits -> [{"class_id", "label", "probability"}], best first."""
    probs = softmax(logits[None])[0]
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class_id": int(i), "label": label_names[i], "probability": float(probs[i])}
            for i in order]


def predict_arrays(module, params, modality: str, data_cfg, split: str, batch_size: int,
                   mesh, views: tuple[int, int], features: bool = True) -> dict[str, np.ndarray]:
    """Every video of `split` once, in split order, on every process: video_ids (N,) str,
    labels (N,), logits (N, C) and features (N, D) (averaged over the views)."""
    keys = tuple(models.MODALITY_KEYS[modality])

    def apply(p, b, **kw):
        return module.apply({"params": p}, *models.model_inputs(modality, b), train=False, **kw)

    logits_fn = evaluate.view_averaged(apply)
    feats_fn = evaluate.view_averaged(lambda p, b: apply(p, b, return_features=True))

    @jax.jit
    def step(p, batch):
        out = {"logits": logits_fn(p, batch), "label": batch["label"], "mask": batch["mask"],
               "ids": batch["ids"], "order": batch["order"]}
        if features:
            out["features"] = feats_fn(p, batch)
        return out

    parts, seen = [], 0
    proc, procs = jax.process_index(), jax.process_count()
    # Each row's place in the one-process order of the split: the files come out the same
    # whatever the number of processes.
    positions = pipeline.eval_positions(data_cfg, split, proc, procs)
    batch_sharding = sharding.batch_sharded(mesh)
    for local in pipeline.eval_iterator(data_cfg, keys, batch_size, split=split,
                                        process_index=proc, process_count=procs,
                                        num_clips=views[0], num_crops=views[1]):
        real = local["mask"] > 0
        order = np.full(len(real), -1, np.int32)
        order[real] = positions[seen:seen + real.sum()]
        seen += int(real.sum())
        batch = sharding.to_global(local, mesh)
        for name, value in (("ids", _encode_ids(local["video_id"])), ("order", order)):
            batch[name] = jax.make_array_from_process_local_data(batch_sharding, value)
        parts.append(jax.tree.map(np.asarray, multihost_utils.process_allgather(
            step(params, batch), tiled=True)))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    real = out.pop("mask") > 0
    out = {k: v[real] for k, v in out.items()}
    rank = np.argsort(out["order"], kind="stable")
    out = {k: v[rank] for k, v in out.items() if k != "order"}
    out["video_ids"] = np.array([_decode_id(r) for r in out.pop("ids")])
    out["labels"] = out.pop("label").astype(np.int64)
    return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """mode=predict: writes predictions_<split>.jsonl and features_<split>.npz (see module doc)."""
    opts = default_analysis_config()
    opts.update(dict(config.get("analysis") or {}))
    ckpt, step = pick_checkpoint(opts.checkpoint, workdir)
    meta = ckpt.restore_meta(step)
    missing = [m for m in checkpoint_meta.missing_fields(meta)
               if m in ("config", "label_names", "config.model", "config.modality",
                        "config.data")]
    if missing:
        raise ValueError(f"checkpoint {ckpt.directory}/{step} lacks {missing} in its meta")
    trained = meta["config"]
    modality = checkpoint_meta.eval_modality(trained["modality"])
    label_names = list(meta["label_names"])
    data_cfg = _data_config(config, meta)
    split = opts.split or data_cfg.eval_split
    views = evaluate.views_of(config)
    mesh = sharding.make_mesh()
    module = models.build_model(trained["model"])
    params = ckpt.restore_params(step, state.abstract_params(
        module, modality, data_cfg, sharding.replicated(mesh)))
    dataset_labels = pipeline.label_names(data_cfg)
    same_labels = list(dataset_labels) == label_names
    if not same_labels:
        logging.warning("mode=predict: %s has other classes than the checkpoint; `label` is the "
                        "dataset's id, `top` the model's classes", data_cfg.name)
    logging.info("mode=predict: %s step %d (%s) on %s/%s, %s", ckpt.directory, step,
                 meta.get("experiment"), data_cfg.name, split, evaluate.protocol(views))

    start = time.time()
    arrays = predict_arrays(module, params, modality, data_cfg, split,
                            evaluate.eval_batch_size(config), mesh, views, opts.features)
    labels, logits = arrays["labels"], arrays["logits"]
    summary = {"checkpoint": os.path.join(ckpt.directory, str(step)), "step": step,
               "experiment": meta.get("experiment"), "dataset": data_cfg.name, "split": split,
               "protocol": evaluate.protocol(views), "eval": evaluate.protocol_dict(views),
               "num_videos": int(len(labels)), "seconds": round(time.time() - start, 2)}
    known = labels >= 0
    if same_labels and known.any():
        true = np.take_along_axis(logits[known], labels[known][:, None], axis=-1)
        rank = (logits[known] > true).sum(-1)
        summary["top1"] = 100.0 * float(np.mean(rank < 1))
        summary["top5"] = 100.0 * float(np.mean(rank < 5))
    tag = file_tag(split)
    paths = {"predictions": os.path.join(workdir, f"predictions_{tag}.jsonl")}
    if opts.features:
        paths["features"] = os.path.join(workdir, f"features_{tag}.npz")
    summary["files"] = paths
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        _write_predictions(paths["predictions"], arrays, label_names, dataset_labels,
                           int(opts.top_k))
        if opts.features:
            info = {**summary, "label_names": label_names}
            np.savez(paths["features"], video_ids=arrays["video_ids"],
                     features=arrays["features"].astype(np.float32),
                     logits=logits.astype(np.float32), labels=labels,
                     info=np.array(json.dumps(info)))
    accuracy = (f"top-1 {summary['top1']:.2f} top-5 {summary['top5']:.2f}, "
                if "top1" in summary else "")
    logging.info("mode=predict: %d videos, %s%s -> %s", summary["num_videos"], accuracy,
                 summary["protocol"], ", ".join(paths.values()))
    return summary


def _write_predictions(path: str, arrays: dict, label_names: list[str],
                       dataset_labels: list[str], k: int) -> None:
    with open(path, "w") as f:
        for vid, label, logits in zip(arrays["video_ids"], arrays["labels"], arrays["logits"]):
            row = {"video_id": str(vid), "label": int(label),
                   "label_name": dataset_labels[label] if 0 <= label < len(dataset_labels)
                   else None,
                   "top": top_k(logits, label_names, k),
                   "logits": [float(x) for x in logits]}
            f.write(json.dumps(row) + "\n")

