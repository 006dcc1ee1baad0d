"""Image pretraining: a ViT learns what a still scene holds, then ships as a ViT checkpoint.

The miniature's ImageNet step (configs/pretrain.py). A ViT of the synthetic presets' width is
trained on `something_synthetic_images` to predict every target of `data/scenes.TARGETS` (one
softmax cross-entropy per target, summed) and written as `vit.npz` in the augreg / big_vision
layout, which `model.init_from.kind=vit_npz` inflates into a TimeSformer exactly like an
ImageNet ViT. Read top to bottom: config, mesh, data, model & optimizer, checkpoint, step,
loop, export.
"""
from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from mmkd_jax import models
from mmkd_jax.convert import vit as vit_convert
from mmkd_jax.data import pipeline, scenes
from mmkd_jax.train import checkpoint, losses, metrics, optim, sharding

EXPORT_FILE = "vit.npz"  # the pretrained image model, augreg / big_vision npz layout
RESULTS_FILE = "results.json"


def target_losses(logits: jnp.ndarray, targets: jnp.ndarray,
                  weights: jnp.ndarray | None = None) -> tuple[jnp.ndarray, dict]:
    """Sum over `scenes.TARGETS` of the cross-entropy of each target's slice of the logits;
    returns (loss, {target: ce}) for logging."""
    out, start = {}, 0
    for i, (name, n) in enumerate(scenes.TARGETS):
        out[name] = losses.cross_entropy(logits[:, start:start + n], targets[:, i], weights)
        start += n
    return sum(out.values()), out


def target_correct(logits: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray) -> dict:
    """Masked counts of correct argmax per target, plus `count`; non-finite logits are wrong."""
    out, start = {"count": jnp.sum(mask)}, 0
    for i, (name, n) in enumerate(scenes.TARGETS):
        part = logits[:, start:start + n]
        right = (jnp.argmax(part, -1) == targets[:, i]) & jnp.all(jnp.isfinite(part), -1)
        out[name] = jnp.sum(right * mask)
        start += n
    return out


def _example_fns(config: ml_collections.ConfigDict):
    d = config.data
    scale = tuple(float(s) for s in d.scale_range)
    train = scenes.example_fn(d.image_size, scale, train=True, color_jitter=d.color_jitter)
    return train, scenes.example_fn(d.image_size, scale, train=False)


def evaluate(eval_step, params, config: ml_collections.ConfigDict, mesh) -> dict:
    """Accuracy (%) per target on the whole validation split, and their mean."""
    _, eval_fn = _example_fns(config)
    totals = None
    for local in pipeline.eval_iterator(config.data, (), config.batch_size,
                                        example_fn=eval_fn,
                                        padding=scenes.padding_example(config.data.image_size),
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count()):
        counts = jax.device_get(eval_step(params, sharding.to_global(local, mesh)))
        totals = counts if totals is None else jax.tree.map(np.add, totals, counts)
    n = max(float(totals["count"]), 1.0)
    acc = {name: 100.0 * float(totals[name]) / n for name, _ in scenes.TARGETS}
    return {"accuracy": acc, "mean_accuracy": float(np.mean(list(acc.values()))),
            "num_examples": int(totals["count"])}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The `pretrain` trainer: trains (or resumes) the image model, exports WORKDIR/vit.npz."""
    # --- config
    os.makedirs(workdir, exist_ok=True)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.num_classes = scenes.NUM_OUTPUTS
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    # --- mesh
    mesh = sharding.make_mesh()
    repl = sharding.replicated(mesh)
    sharding.check_batch_size(config.batch_size, mesh)

    # --- data
    steps_per_epoch = pipeline.steps_per_epoch(config.data, config.batch_size)
    total_steps = config.total_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = config.eval_every_steps or total_steps
    ckpt_every = config.checkpoint_every_steps or eval_every
    train_fn, _ = _example_fns(config)

    # --- model & optimizer
    module = models.build_model(config.model)
    size = config.data.image_size
    params = jax.jit(lambda rng: module.init(rng, jnp.zeros((1, size, size, 3)),
                                             train=False)["params"],
                     out_shardings=repl)(jax.random.key(config.seed))
    tx, lr_fn = optim.make_optimizer(config.optim, total_steps)

    # --- checkpoint
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   keep=config.keep_checkpoints)
    ckpt.check_writable()
    # As the trainer: the newest step that restores whole; damaged ones are moved aside.
    restored = ckpt.restore_latest_intact(
        checkpoint.abstract_like(params, repl),
        checkpoint.abstract_like(jax.eval_shape(tx.init, params), repl))
    start_step = restored[0] if restored else 0
    if restored:
        _, params, opt_state, _ = restored
        logging.info("Resuming pretraining from step %d (%s).", start_step, ckpt.directory)
    else:
        opt_state = jax.jit(tx.init, out_shardings=repl)(params)
    meta = {"experiment": "pretrain", "model": config.model.to_dict(),
            "data": config.data.to_dict(), "targets": [list(t) for t in scenes.TARGETS]}
    n_params = sum(x.size for x in jax.tree.leaves(params))
    logging.info("pretrain: %s %s on %s | %d params | batch %d | %d steps/epoch, %d steps, "
                 "peak lr %g", config.model.name, config.model.variant, config.data.name,
                 n_params, config.batch_size, steps_per_epoch, total_steps, config.optim.lr)

    # --- step
    def loss_fn(params, batch):
        logits = module.apply({"params": params}, batch["image"], train=True)
        return target_losses(logits, batch["targets"])

    @jax.jit
    def eval_step(params, batch):
        logits = module.apply({"params": params}, batch["image"], train=False)
        return target_correct(logits, batch["targets"], batch["mask"])

    def train_step(state, batch, step):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return ({"params": params, "opt_state": opt_state},
                {"loss": loss, **parts, "grad_norm": optax.global_norm(grads),
                 "lr": lr_fn(step)})

    train_step = jax.jit(train_step, donate_argnums=(0,))

    # --- loop
    writer = metrics.Writer(workdir)
    progress = metrics.Progress(total_steps, config.batch_size, start_step)
    state = {"params": params, "opt_state": opt_state}
    batches = pipeline.train_iterator(config.data, (), config.batch_size, seed=config.seed,
                                      start_step=start_step, example_fn=train_fn,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count())
    pending, last_eval, start = [], None, time.time()
    try:
        for step in range(start_step + 1, total_steps + 1):
            state, step_metrics = train_step(state, sharding.to_global(next(batches), mesh),
                                             jnp.asarray(step - 1, jnp.int32))
            pending.append(step_metrics)
            if step % config.log_every_steps == 0 or step == total_steps:
                fetched = jax.device_get(pending)
                pending = []
                if not all(np.isfinite(m["loss"]) for m in fetched):
                    raise FloatingPointError(
                        f"Non-finite pretraining loss before step {step}; stopping. Last good "
                        f"checkpoint: step {ckpt.latest_step()} in {ckpt.directory}.")
                scalars = {k: np.mean([m[k] for m in fetched]) for k in fetched[0]}
                scalars.update(progress.update(step))
                metrics.log_progress("pretrain", step, total_steps, scalars)
                writer.write(step, {f"train/{k}": v for k, v in scalars.items()})
            is_eval = step % eval_every == 0 or step == total_steps
            if is_eval:
                last_eval = evaluate(eval_step, state["params"], config, mesh)
                logging.info("pretrain eval at step %d: mean accuracy %.2f (%s)", step,
                             last_eval["mean_accuracy"], ", ".join(
                                 f"{k} {v:.1f}" for k, v in last_eval["accuracy"].items()))
                writer.write(step, {"eval/mean_accuracy": last_eval["mean_accuracy"],
                                    **{f"eval/{k}": v
                                       for k, v in last_eval["accuracy"].items()}})
            if is_eval or step % ckpt_every == 0:
                ckpt.save(step, state["params"], state["opt_state"], meta | {"step": step},
                          metrics={"top1": last_eval["mean_accuracy"]} if is_eval else None)
    finally:
        ckpt.close()
        writer.close()

    # --- export
    final = last_eval if last_eval is not None else evaluate(eval_step, state["params"],
                                                             config, mesh)
    results = {"experiment": "pretrain", "kind": "pretrain", "dataset": config.data.name,
               "final": final, "steps": total_steps, "num_params": int(n_params),
               "train_time_s": time.time() - start, "export": EXPORT_FILE}
    if jax.process_index() == 0:
        export = vit_convert.vit_to_npz(jax.device_get(state["params"]),
                                        config.model.num_heads)
        np.savez(os.path.join(workdir, EXPORT_FILE), **export)
        with open(os.path.join(workdir, RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2)
    logging.info("pretrain: wrote %s (mean accuracy %.2f on %d validation scenes)",
                 os.path.join(workdir, EXPORT_FILE), final["mean_accuracy"],
                 final["num_examples"])
    return results
