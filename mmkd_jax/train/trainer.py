"""The one trainer: baselines, omnivore and distillation differ only by config.

Read top to bottom: config, mesh, data, model & optimizer, teacher, checkpoint, step, loop.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmkd_jax import checkpoint_meta, convert, models
from mmkd_jax.data import pipeline
from mmkd_jax.train import checkpoint, evaluate, metrics, optim, sharding, state, steps
from mmkd_jax.train import members as members_lib


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills what the dataset decides (class count) and fails early on a bad config."""
    config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy we may complete
    if config.modality not in models.MODALITY_KEYS:
        raise ValueError(f"config.modality={config.modality!r}; choose one of "
                         f"{sorted(models.MODALITY_KEYS)}.")
    if config.model.get("num_classes", -1) <= 0:
        config.model.num_classes = len(pipeline.label_names(config.data))
    config.model.num_frames = config.data.num_frames  # the model sees what the pipeline emits
    if config.batch_size % config.accum_steps:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by "
                         f"accum_steps={config.accum_steps}.")
    return config


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, members_lib.CONFIG_FILE), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


class _Preemption:
    """SIGTERM (preemption, `kill`) asks the loop to checkpoint and stop at the next step."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) the run in `workdir`; returns the results written to results.json."""
    # --- config
    os.makedirs(workdir, exist_ok=True)
    config = resolve_config(config)
    name = config.get("experiment", os.path.basename(os.path.normpath(workdir)))
    train_modality = config.modality
    eval_modality = "rgb" if train_modality == "omni" else train_modality  # omnivore: RGB at test
    if config.teacher.members:
        # Members first (they may need training), before this run takes any resources.
        members_lib.ensure_trained(config, workdir, train_and_evaluate)
    _save_config(config, workdir)

    # --- mesh
    mesh = sharding.make_mesh()
    repl = sharding.replicated(mesh)
    sharding.check_batch_size(config.batch_size // config.accum_steps, mesh)

    # --- data
    steps_per_epoch = pipeline.steps_per_epoch(config.data, config.batch_size)
    total_steps = config.total_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
    ckpt_every = config.checkpoint_every_steps or eval_every

    # --- model & optimizer
    module = models.build_model(config.model)
    params = state.init_params(module, train_modality, config.data,
                               jax.random.key(config.seed), repl)
    init_kind = config.model.init_from.get("kind", "")
    tx, lr_fn = optim.make_optimizer(config.optim, total_steps)

    # --- teacher (frozen: a separate, non-donated argument of the step; never checkpointed)
    members, member_infos = ([], [])
    if config.teacher.members:
        members, member_infos = members_lib.load(config, workdir, repl)
    keys = tuple(models.MODALITY_KEYS[train_modality]) + tuple(
        k for k in steps.member_keys(members) if k not in models.MODALITY_KEYS[train_modality])

    # --- checkpoint
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   keep=config.keep_checkpoints)
    start_step = ckpt.latest_step() or 0
    if start_step:
        params, opt_state, _ = ckpt.restore(
            start_step, checkpoint.abstract_like(params, repl),
            checkpoint.abstract_like(jax.eval_shape(tx.init, params), repl))
        logging.info("Resuming %s from its own checkpoint at step %d (%s).", name, start_step,
                     ckpt.directory)
        if init_kind:
            logging.info("Ignoring config.model.init_from (%s %s): it only initialises a fresh "
                         "run; this workdir resumes its own.", init_kind,
                         config.model.init_from.path)
    else:
        if init_kind:
            params, report = convert.init_from(init_kind, config.model.init_from.path, module,
                                               params,
                                               label_names=pipeline.label_names(config.data))
            params = jax.device_put(params, repl)
            logging.info("Fine-tuning from %s %s (fresh optimiser, step 0):\n%s", init_kind,
                         config.model.init_from.path, report)
        else:
            logging.info("Training %s from scratch (random init).", name)
        opt_state = jax.jit(tx.init, out_shardings=repl)(params)
    meta = checkpoint_meta.build(config, pipeline.label_names(config.data), name)

    n_params = sum(x.size for x in jax.tree.leaves(params))
    logging.info(
        "%s: %s on %s | %d params | global batch %d (%d devices x %d, accum %d) | "
        "%d steps/epoch, %d steps, peak lr %g | %d processes",
        name, config.model.name, config.data.name, n_params, config.batch_size,
        mesh.devices.size, config.batch_size // config.accum_steps // mesh.devices.size,
        config.accum_steps, steps_per_epoch, total_steps, config.optim.lr, jax.process_count())

    # --- step
    train_step = jax.jit(steps.make_train_step(module, train_modality, members, tx, lr_fn, config),
                         donate_argnums=(0,))
    eval_step = steps.make_eval_step(evaluate.view_averaged(
        lambda p, b: module.apply({"params": p}, *models.model_inputs(eval_modality, b),
                                  train=False)))
    eval_keys = tuple(models.MODALITY_KEYS[eval_modality])
    views = evaluate.views_of(config)  # (clips, crops); (1, 1) = the paper's single view

    def run_eval(params) -> dict:
        return evaluate.eval_loop(eval_step, params, config.data, eval_keys,
                                  evaluate.eval_batch_size(config), mesh, views)

    # --- loop
    writer = metrics.Writer(workdir)
    progress = metrics.Progress(total_steps, config.batch_size, start_step)
    preemption = _Preemption()
    train_state = {"params": params, "opt_state": opt_state}
    teacher_params = [p for _, p, _ in members]
    batches = pipeline.train_iterator(
        config.data, keys, config.batch_size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count())
    pending, history, last_eval = [], [], None
    train_start = time.time()
    try:
        for step in range(start_step + 1, total_steps + 1):
            batch = sharding.to_global(next(batches), mesh)
            train_state, step_metrics = train_step(train_state, batch, teacher_params,
                                                   jnp.asarray(step - 1, jnp.int32))
            pending.append(step_metrics)  # fetched at log time: no host sync per step

            if step % config.log_every_steps == 0 or step == total_steps:
                fetched = jax.device_get(pending)
                pending = []
                bad = [i for i, m in enumerate(fetched) if not np.isfinite(m["loss"])]
                if bad:
                    first_bad = step - len(fetched) + 1 + bad[0]
                    raise FloatingPointError(
                        f"Non-finite loss at step {first_bad} of {name}; stopping. Last good "
                        f"checkpoint: step {ckpt.latest_step()} in {ckpt.directory}.")
                scalars = {k: np.mean([m[k] for m in fetched]) for k in fetched[0]}
                scalars.update(progress.update(step))
                metrics.log_progress(name, step, total_steps, scalars)
                writer.write(step, {f"train/{k}": v for k, v in scalars.items()})

            is_eval = step % eval_every == 0 or step == total_steps
            if is_eval:
                last_eval = run_eval(train_state["params"])
                history.append({"step": step, "epoch": step / steps_per_epoch, **last_eval})
                logging.info("%s eval at step %d (epoch %.2f): top-1 %.2f top-5 %.2f (%s)",
                             name, step, step / steps_per_epoch, last_eval["top1"],
                             last_eval["top5"], evaluate.protocol(views))
                writer.write(step, {"eval/top1": last_eval["top1"],
                                    "eval/top5": last_eval["top5"]})
            if is_eval or step % ckpt_every == 0 or preemption.requested:
                ckpt.save(step, train_state["params"], train_state["opt_state"],
                          meta | {"step": step},
                          metrics={"top1": last_eval["top1"]} if is_eval else None,
                          force=preemption.requested)
            if preemption.requested:
                ckpt.wait()
                logging.warning("SIGTERM: checkpoint saved at step %d in %s; rerun the same "
                                "command to resume.", step, ckpt.directory)
                raise SystemExit(128 + signal.SIGTERM)
    finally:
        preemption.restore()
        ckpt.close()
        writer.close()

    # --- results
    final = last_eval if last_eval is not None else run_eval(train_state["params"])
    best_step = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                        read_only=True).best_step()
    results = {"experiment": name, "kind": "train", "modality": train_modality,
               "eval_modality": eval_modality, "dataset": config.data.name,
               "split": config.data.eval_split, "protocol": evaluate.protocol(views),
               "eval": evaluate.protocol_dict(views), "final": final, "best_step": best_step,
               "steps": total_steps, "epochs": total_steps / steps_per_epoch,
               "num_params": int(n_params),
               "train_time_s": time.time() - train_start, "history": history}
    if members:
        results["teacher"] = evaluate.evaluate_teacher(
            members, config.data, evaluate.eval_batch_size(config), mesh, views)
        results["members"] = [{k: i[k] for k in ("name", "workdir", "step", "modality")}
                              | {"final": (i["results"] or {}).get("final")}
                              for i in member_infos]
    if jax.process_index() == 0:
        with open(os.path.join(workdir, members_lib.RESULTS_FILE), "w") as f:
            json.dump(results, f, indent=2)
    rows = evaluate.results_rows(member_infos, views=views)
    if members:
        rows.append(("teacher (logit average)", results["teacher"]))
    rows.append((f"{name} ({eval_modality})", final))
    evaluate.print_table(rows, evaluate.protocol(views))
    return results
